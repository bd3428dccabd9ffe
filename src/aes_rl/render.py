"""Self-contained, offline HTML replays of Brax episodes.

Brax's stock viewer (``brax.io.html.render``) emits a page that, when opened,
loads three.js, lil-gui, pako, es-module-shims and Brax's own viewer modules
from CDNs, so it shows nothing on a machine without internet access. This
module produces the same viewer with every script inlined:

* three.js r150.1 (the version Brax's template pins), its ``OrbitControls``
  add-on, lil-gui 0.18.0 and pako 2.1.0's inflate build are shipped, minified,
  in ``aes_rl/assets/`` (see ``assets/LICENSES.md`` for versions and licences);
* Brax's viewer modules (``viewer.js``, ``system.js``, ``animator.js``,
  ``selector.js``) are read from the installed ``brax`` package
  (``brax/visualizer/js``), so the viewer always matches the installed Brax;
* ES modules are wired together with an import map whose entries are
  ``data:`` URLs; the episode itself (``brax.io.json.dumps`` of the system
  and the trajectory) is zlib-compressed and base64-encoded into the page,
  exactly as Brax does.

The resulting page makes no network request: it needs a browser with
import-map support (Chrome/Edge 89+, Firefox 108+, Safari 16.4+) and WebGL.

:func:`render_video` additionally writes an animated GIF through MuJoCo's
offscreen renderer (``brax.io.image``). Headless, MuJoCo needs an offscreen GL
backend chosen *before* ``mujoco`` is first imported (it is imported by
``brax``): set ``MUJOCO_GL=egl`` (needs libEGL, e.g. Debian ``libegl1`` +
``libegl-mesa0``) or ``MUJOCO_GL=osmesa`` in the environment.

Typical use::

    states = [state.pipeline_state for state in rollout]
    write_html("episode.html", env.sys, states)
"""

from __future__ import annotations

import base64
import html as _html
import importlib.resources
import json as _json
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import brax
import numpy as np
from brax.base import State, System
from brax.io import json as brax_json

__all__ = ["ASSETS", "render_frames", "render_html", "render_video", "write_html"]

# Shipped third-party files: import-map specifier (or "" for a classic script) -> file name.
# Versions/licences are documented in assets/LICENSES.md.
ASSETS: dict[str, str] = {
    "three": "three.module.min.js",  # three@0.150.1, MIT
    "three/addons/controls/OrbitControls.js": "OrbitControls.min.js",  # three@0.150.1, MIT
    "lilgui": "lil-gui.esm.min.js",  # lil-gui@0.18.0, MIT
    "": "pako_inflate.min.js",  # pako@2.1.0, (MIT AND Zlib); classic script, defines `pako`
}

# Brax's viewer modules, as found in the installed brax package.
_BRAX_VIEWER_MODULES = ("viewer.js", "system.js", "animator.js", "selector.js")
_BRAX_PREFIX = "brax-viewer/"

# `import ... from 'x'`, `import 'x'`, `export ... from 'x'` (static specifiers only).
_STATIC_IMPORT_RE = re.compile(
    r"""(?P<head>\b(?:import|export)\b[^'";]*?\bfrom\s*|\bimport\s*)(?P<q>['"])(?P<spec>[^'"]+)(?P=q)"""
)
_DYNAMIC_IMPORT_RE = re.compile(r"""\bimport\s*\(""")


def _read_asset(name: str) -> str:
    return (importlib.resources.files("aes_rl") / "assets" / name).read_text(encoding="utf-8")


def _read_brax_viewer_module(name: str) -> str:
    path = importlib.resources.files("brax") / "visualizer" / "js" / name
    return path.read_text(encoding="utf-8")


def _data_url(js_source: str) -> str:
    encoded = base64.b64encode(js_source.encode("utf-8")).decode("ascii")
    return f"data:text/javascript;base64,{encoded}"


def _rewrite_relative_imports(source: str) -> str:
    """Turn ``'./foo.js'`` specifiers into the bare ``'brax-viewer/foo.js'``.

    Relative specifiers cannot be resolved from a ``data:`` URL module, so the
    viewer's sibling modules are addressed through the import map instead.
    """

    def repl(m: re.Match[str]) -> str:
        spec = m.group("spec")
        if spec.startswith("./"):
            spec = _BRAX_PREFIX + spec[2:]
        return f"{m.group('head')}{m.group('q')}{spec}{m.group('q')}"

    return _STATIC_IMPORT_RE.sub(repl, source)


def _static_specifiers(source: str) -> set[str]:
    return {m.group("spec") for m in _STATIC_IMPORT_RE.finditer(source)}


def _build_import_map() -> dict[str, str]:
    """Import map specifier -> data: URL for every module the viewer needs.

    Raises:
      RuntimeError: if a module imports something not provided offline (e.g. a
        newer Brax whose viewer needs an extra three.js add-on).
    """
    sources: dict[str, str] = {spec: _read_asset(fname) for spec, fname in ASSETS.items() if spec}
    for name in _BRAX_VIEWER_MODULES:
        sources[_BRAX_PREFIX + name] = _rewrite_relative_imports(_read_brax_viewer_module(name))

    for spec, src in sources.items():
        missing = _static_specifiers(src) - sources.keys()
        if missing:
            raise RuntimeError(
                f"module {spec!r} imports {sorted(missing)}, which aes_rl.render does not ship; "
                "add the file to aes_rl/assets/ and ASSETS"
            )
        if spec.startswith(_BRAX_PREFIX) and _DYNAMIC_IMPORT_RE.search(src):
            raise RuntimeError(f"brax viewer module {spec!r} uses dynamic import(); unsupported")
    return {spec: _data_url(src) for spec, src in sources.items()}


def _inline_classic_script(source: str) -> str:
    # An inline <script> ends at the first "</script" whatever the JS context.
    return source.replace("</script", "<\\/script")


def _css_height(height: int | str) -> str:
    if isinstance(height, bool):
        raise TypeError("height must be an int (pixels) or a CSS length string")
    if isinstance(height, int):
        return f"{height}px"
    if not re.fullmatch(r"[0-9.]+(px|vh|vw|em|rem|%)", height.strip()):
        raise ValueError(f"unsupported CSS height {height!r}")
    return height.strip()


_TEMPLATE = """<!DOCTYPE html>
<!-- Brax episode replay written by aes_rl.render; works offline. Embeds three.js r150.1 and
     its OrbitControls (MIT), lil-gui 0.18.0 (MIT), pako 2.1.0 inflate (MIT AND Zlib) and the
     viewer modules of Brax {brax_version} (Apache-2.0). -->
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>
  body {{ margin: 0; padding: 0; }}
  #brax-container {{ position: relative; }}
  #brax-viewer {{ height: {height}; width: 100%; margin: 0; padding: 0; overflow: hidden; }}
  #brax-error {{ display: none; position: absolute; left: 8px; top: 8px; margin: 0;
                 color: #a00; font: 13px monospace; white-space: pre-wrap; }}
</style>
<script>
window.addEventListener("error", function (e) {{
  var el = document.getElementById("brax-error");
  if (el) {{ el.style.display = "block"; el.textContent += "Viewer error: " + e.message + "\\n"; }}
}});
</script>
<script type="importmap">
{import_map}
</script>
<script>
{pako}
</script>
<script>
var system = (function () {{
  var b64 = "{system_b64}";
  var bin = atob(b64);
  var bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return JSON.parse(new TextDecoder("utf-8").decode(pako.inflate(bytes)));
}})();
</script>
</head>
<body>
<div id="brax-container">
  <div id="brax-viewer"></div>
  <pre id="brax-error"></pre>
</div>
<script type="module">
import {{Viewer}} from "{viewer_spec}";
const domElement = document.getElementById("brax-viewer");
window.braxViewer = new Viewer(domElement, system);
</script>
</body>
</html>
"""


def render_html(
    sys: System,
    pipeline_states: Sequence[State],
    height: int | str = 480,
    title: str = "Brax episode",
) -> str:
    """Returns a self-contained HTML page replaying ``pipeline_states``.

    Same inputs as ``brax.io.html.render``, but the page embeds every script
    (three.js, OrbitControls, lil-gui, pako and Brax's viewer modules) and
    makes no network request when opened.

    Args:
      sys: the Brax ``System`` (e.g. ``env.sys``).
      pipeline_states: the trajectory, one ``brax.base.State`` per frame
        (``env_state.pipeline_state`` of each step), un-batched.
      height: viewer height, in pixels (int) or as a CSS length (e.g. "100vh").
      title: the page title.

    Returns:
      The HTML document as a string.
    """
    if len(pipeline_states) == 0:
        raise ValueError("pipeline_states is empty: nothing to render")
    system_json = brax_json.dumps(sys, list(pipeline_states))
    system_b64 = base64.b64encode(zlib.compress(system_json.encode("utf-8"), 9)).decode("ascii")
    import_map = _json.dumps({"imports": _build_import_map()}, indent=1)
    return _TEMPLATE.format(
        brax_version=_html.escape(getattr(brax, "__version__", "?")),
        title=_html.escape(title),
        height=_css_height(height),
        import_map=import_map,
        pako=_inline_classic_script(_read_asset(ASSETS[""])),
        system_b64=system_b64,
        viewer_spec=_BRAX_PREFIX + "viewer.js",
    )


def write_html(
    path: str | os.PathLike[str],
    sys: System,
    pipeline_states: Sequence[State],
    height: int | str = 480,
    title: str = "Brax episode",
) -> Path:
    """Writes :func:`render_html`'s page to ``path`` (parents created) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(sys, pipeline_states, height=height, title=title), encoding="utf-8")
    return path


def _default_camera(sys: System) -> str | None:
    """Brax's locomotion models carry a ``track`` camera that follows the body."""
    model = sys.mj_model
    for i in range(model.ncam):
        if model.camera(i).name == "track":
            return "track"
    return None


def render_frames(
    sys: System,
    pipeline_states: Sequence[State],
    height: int = 240,
    width: int = 320,
    camera: str | None = "auto",
) -> np.ndarray:
    """Renders each state with MuJoCo's offscreen renderer.

    Args:
      sys: the Brax ``System``.
      pipeline_states: one ``brax.base.State`` per frame, un-batched.
      height: image height in pixels.
      width: image width in pixels.
      camera: a camera name from the model, ``None`` for MuJoCo's free camera,
        or ``"auto"`` for the model's ``track`` camera when it has one.

    Returns:
      ``uint8`` array of shape ``(T, height, width, 3)``.

    Raises:
      RuntimeError: if no OpenGL context can be made (headless without
        ``MUJOCO_GL=egl``/``osmesa`` set before ``mujoco`` was imported).
    """
    import mujoco
    from brax.io import image as brax_image

    if len(pipeline_states) == 0:
        raise ValueError("pipeline_states is empty: nothing to render")
    if camera == "auto":
        camera = _default_camera(sys)
    try:
        frames = brax_image.render_array(sys, list(pipeline_states), height, width, camera)
    except mujoco.FatalError as err:
        raise RuntimeError(
            "MuJoCo could not create an OpenGL context. Headless, set MUJOCO_GL=egl (or osmesa) "
            "in the environment before mujoco/brax is first imported."
        ) from err
    return np.stack([np.asarray(f, dtype=np.uint8) for f in frames])


def render_video(
    path: str | os.PathLike[str],
    sys: System,
    pipeline_states: Sequence[State],
    fps: float,
    height: int = 240,
    width: int = 320,
    camera: str | None = "auto",
) -> Path:
    """Writes the episode as an animated GIF (MuJoCo offscreen render + Pillow).

    Args:
      path: output file (``.gif``); parents are created.
      sys: the Brax ``System``.
      pipeline_states: one ``brax.base.State`` per frame, un-batched.
      fps: frames per second; for one state per env step use ``1 / env.dt``.
      height: image height in pixels.
      width: image width in pixels.
      camera: see :func:`render_frames`.

    Returns:
      The written path.
    """
    from PIL import Image

    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = render_frames(sys, pipeline_states, height=height, width=width, camera=camera)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=0,
    )
    return path
