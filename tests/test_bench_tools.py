"""The benchmarks' shared tools: profile summaries and where a run's figures are written."""

import jax
import jax.numpy as jnp

from benchmarks import common

STEPS = 50


@jax.jit
def _steps(x):
    def body(c, _):
        return jnp.tanh(c @ c.T), None

    return jax.lax.scan(body, x, None, length=STEPS)[0]


def test_trace_summary_counts_each_steps_work(tmp_path):
    x = jnp.full((64, 64), 0.01)
    _steps(x).block_until_ready()  # compiled before the trace
    out = common.traced(_steps, x, tmp_path)
    assert jnp.array_equal(out, _steps(x))
    rows = common.trace_summary(tmp_path, per=STEPS, top=50)
    assert rows and all(r["us"] >= 0 for r in rows)
    assert [r["us"] for r in rows] == sorted((r["us"] for r in rows), reverse=True)
    # the matrix product runs once per step of the scan; the scan's loop once in all
    dots = [r for r in rows if "dot" in r["name"] and not r["name"].startswith("end")]
    assert dots and all(r["calls"] == 1.0 for r in dots)
    loops = [r for r in rows if r["name"].startswith("while")]
    assert loops and loops[0]["calls"] == 1 / STEPS
    assert not any(r["name"].startswith("$") for r in rows)  # no Python frames


def test_runs_on_another_backend_or_quick_write_their_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    assert common.section_key("sweep_rows", False, "cpu") == "sweep_rows"
    for quick, backend in ((False, "cpu"), (True, "cpu"), (False, "gpu"), (True, "gpu")):
        key = common.section_key("sweep_rows", quick, backend)
        common.write_section(key, f"figures {quick} {backend}\n", path)
    text = path.read_text()
    for quick, backend in ((False, "cpu"), (True, "cpu"), (False, "gpu"), (True, "gpu")):
        assert text.count(f"figures {quick} {backend}") == 1  # none replaced another
    assert "<!-- sweep_rows-gpu:start -->" in text and "<!-- sweep_rows-quick-gpu:start -->" in text
