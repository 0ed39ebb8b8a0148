"""Self-contained HTML reports (they work offline, attached to an email): matplotlib figures rendered to
inline SVG, tables, and a box of flags stated in words at the top. Used by the reward-model QA report and
the checkpoint comparison report."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG: smaller, searchable, selectable
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f6f6f6}.flags{border:2px solid #d62728;background:#fff4f4;padding:.5em 1em;margin:1em 0}
.ok{border:2px solid #2ca02c;background:#f4fff4;padding:.5em 1em;margin:1em 0}figure{margin:1em 0}
"""


def figure(width: float = 6.0, height: float = 3.5):
    return plt.subplots(figsize=(width, height), dpi=100)


def svg(fig) -> str:
    """The figure as inline SVG (and closed)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def page(
    title: str, sections: Sequence[tuple[str, str]], *, flags: Sequence[str] = (), summary: str = ""
) -> str:
    """An HTML page: the title, the flags (or a line saying there are none), a summary, then sections of
    (heading, HTML body)."""
    if flags:
        box = (
            '<div class="flags"><b>Flags</b><ul>'
            + "".join(f"<li>{html.escape(f)}</li>" for f in flags)
            + "</ul></div>"
        )
    else:
        box = '<div class="ok">No flags: nothing in these numbers calls for a warning.</div>'
    parts = [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{box}"
        f"{f'<p>{html.escape(summary)}</p>' if summary else ''}{''.join(parts)}</body></html>"
    )
