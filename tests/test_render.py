"""Tests for aes_rl.render: the offline HTML replay (checked in headless Chromium) and GIFs."""

import os

# MuJoCo picks its GL backend when first imported; EGL renders offscreen without a display.
# (Only effective if no earlier test module imported mujoco/brax: see test_render_video.)
os.environ.setdefault("MUJOCO_GL", "egl")

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import brax.envs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.io import html as brax_html
from PIL import Image

from aes_rl import render

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless browser check needs Chromium (Debian package `chromium`)",
)

# The only absolute URL allowed anywhere in the page: a licence banner comment in pako.
_ALLOWED_URLS = {"https://github.com/nodeca/pako"}


@pytest.fixture(scope="module")
def episode():
    """A real 21-frame hopper episode (spring backend, zero actions)."""
    env = brax.envs.get_environment("hopper", backend="spring")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    action = jnp.zeros(env.action_size)
    states = [state.pipeline_state]
    for _ in range(20):
        state = step(state, action)
        states.append(state.pipeline_state)
    return env, states


# ----------------------------------------------------------------------------- static checks


def _import_map(page: str) -> dict[str, str]:
    m = re.search(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    assert m, "page has no import map"
    return json.loads(m.group(1))["imports"]


def test_html_is_self_contained(episode, tmp_path):
    env, states = episode
    path = render.write_html(tmp_path / "sub" / "episode.html", env.sys, states, height=320)
    page = path.read_text(encoding="utf-8")
    assert page == render.render_html(env.sys, states, height=320)
    assert "height: 320px" in page

    # No external script, stylesheet, image or icon: every src/href is a data: URL.
    for tag_attr in re.findall(r"<[a-z]+[^>]*\b(?:src|href)\s*=\s*[\"']([^\"']*)", page):
        assert tag_attr.startswith("data:"), tag_attr
    # Every ES module comes from the import map, and every entry is inlined.
    imports = _import_map(page)
    assert {"three", "lilgui", "brax-viewer/viewer.js"} <= imports.keys()
    for spec, url in imports.items():
        assert url.startswith("data:text/javascript;base64,"), spec
        module = base64.b64decode(url.split(",", 1)[1]).decode("utf-8")
        assert not re.search(r"""(?:\bfrom|\bimport)\s*\(?\s*["']https?:""", module), spec
        assert not re.search(r"""(?:\bfrom|\bimport)\s*\(?\s*["']\.""", module), spec
    # No absolute URL at all in the page text, except pako's licence banner.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= _ALLOWED_URLS
    # ...whereas Brax's stock page pulls its scripts from CDNs.
    assert re.search(r"https://\S+\.js", brax_html.render(env.sys, states))


def test_render_html_rejects_empty_trajectory(episode):
    env, _ = episode
    with pytest.raises(ValueError, match="empty"):
        render.render_html(env.sys, [])


def test_unshippable_viewer_import_is_reported(episode, monkeypatch):
    """A future Brax viewer needing a module we do not ship fails loudly, not in the browser."""
    env, states = episode
    original = render._read_brax_viewer_module

    def patched(name):
        src = original(name)
        if name == "viewer.js":
            src = "import {STLLoader} from 'three/addons/loaders/STLLoader.js';\n" + src
        return src

    monkeypatch.setattr(render, "_read_brax_viewer_module", patched)
    with pytest.raises(RuntimeError, match="STLLoader"):
        render.render_html(env.sys, states)


# ----------------------------------------------------------------------------- browser checks


def _chromium_screenshot(html: Path, tmp_path: Path) -> tuple[np.ndarray, set[str]]:
    """Opens ``html`` in headless Chromium with the network disabled.

    Returns the 800x600 screenshot (RGB) and the http(s) URLs the *page* tried to fetch
    (from Chromium's net log; Chromium's own background requests are left out).
    """
    png, netlog = tmp_path / f"{html.stem}.png", tmp_path / f"{html.stem}.netlog.json"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",  # WebGL then runs on Chromium's software (SwiftShader) backend
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / ('profile-' + html.stem)}",
        # No network: every connection goes to a dead local proxy, no name resolves.
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={netlog}",
        "--window-size=800,600",
        "--virtual-time-budget=10000",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    assert png.exists(), f"no screenshot (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    image = np.asarray(Image.open(png).convert("RGB"))

    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    page_urls = set()
    for event in log["events"]:
        params = event.get("params", {})
        url = params.get("url", "")
        if (
            event["type"] == start_job
            and url.startswith(("http://", "https://"))
            and params.get("initiator") != "not an origin"  # Chromium's own background requests
        ):
            page_urls.add(url)
    return image, page_urls


def _scene_drawn(image: np.ndarray) -> bool:
    """True if the screenshot shows a rendered 3-D scene, not a blank (or text-only) page.

    A WebGL scene fills most of the viewport with non-white, shaded pixels; a page whose
    scripts failed is flat white, at most with a line of error text.
    """
    pixels = image.reshape(-1, 3)
    non_white = np.any(pixels < 245, axis=1).mean()
    n_colours = len(np.unique(pixels, axis=0))
    return non_white > 0.5 and n_colours >= 20


@needs_chromium
def test_offline_replay_draws_the_hopper(episode, tmp_path):
    env, states = episode
    html = render.write_html(tmp_path / "ours.html", env.sys, states)
    image, page_urls = _chromium_screenshot(html, tmp_path)
    assert page_urls == set(), f"page tried to reach the network: {sorted(page_urls)}"
    assert _scene_drawn(image)
    # The viewer canvas (top 480 px) is drawn, the rest of the 600 px window is page background.
    assert np.any(image[:470].reshape(-1, 3) < 245, axis=1).mean() > 0.95
    assert np.all(image[490:] >= 250)


@needs_chromium
def test_scene_check_fails_when_scripts_do_not_load(episode, tmp_path):
    """The same check reports 'no scene' for pages whose scripts cannot run offline."""
    env, states = episode
    # Brax's stock page: its scripts are on CDNs, unreachable here.
    stock = tmp_path / "stock.html"
    stock.write_text(brax_html.render(env.sys, states), encoding="utf-8")
    image, page_urls = _chromium_screenshot(stock, tmp_path)
    assert any("three" in u or "brax" in u for u in page_urls), page_urls  # netlog check works
    assert not _scene_drawn(image)

    # Our page with a broken three.js module: the error is shown as text, no scene.
    page = render.render_html(env.sys, states)
    three_url = _import_map(page)["three"]
    broken_js = base64.b64encode(b"export const = ;").decode()
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.replace(three_url, "data:text/javascript;base64," + broken_js), encoding="utf-8"
    )
    image, page_urls = _chromium_screenshot(broken, tmp_path)
    assert page_urls == set()
    assert not _scene_drawn(image)


# ----------------------------------------------------------------------------- GIF


def _mujoco_offscreen_backend() -> str:
    gl = sys.modules.get("mujoco.rendering.classic.gl_context")
    return getattr(gl, "_MUJOCO_GL", "")


def test_render_video(episode, tmp_path):
    if _mujoco_offscreen_backend() not in ("egl", "osmesa") and not os.environ.get("DISPLAY"):
        pytest.skip("mujoco was imported without MUJOCO_GL=egl/osmesa and there is no display")
    env, states = episode
    path = render.render_video(tmp_path / "ep.gif", env.sys, states, fps=1 / env.dt, height=96)
    with Image.open(path) as gif:
        assert gif.n_frames == len(states)
        assert gif.size == (320, 96)
        frame = np.asarray(gif.convert("RGB"))
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
