"""Self-contained HTML reports (they work offline, attached to an email): matplotlib figures rendered to
inline SVG, tables, answers side by side, and a box of flags stated in words at the top. Used by the
reward-model QA report and the checkpoint comparison report.

Everything that reaches a page as text goes through `escape` (model answers, prompts, names, flags): a
`<script>` in an answer stays text. Only the helpers here and `svg` produce markup.
"""

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
.sbs{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:8px;margin:.3em 0 1.2em}
.sbs>div{border:1px solid #ddd;padding:6px 8px}.sbs pre,.prompt{white-space:pre-wrap;margin:.3em 0;font:inherit}
.prompt{background:#f6f6f6;padding:6px 8px}.note{color:#555;font-size:90%}
"""


def escape(text) -> str:
    """The one escaping for everything that reaches a page as text (quotes included: safe in attributes)."""
    return html.escape(str(text), quote=True)


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
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def paragraph(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def side_by_side(prompt: str, answers: Sequence[tuple[str, str, str]]) -> str:
    """A prompt, then its answers in columns: (heading, answer, note such as its scores), all escaped."""
    cols = "".join(
        f'<div><b>{escape(head)}</b><div class="note">{escape(note)}</div><pre>{escape(text)}</pre></div>'
        for head, text, note in answers
    )
    return f'<pre class="prompt">{escape(prompt)}</pre><div class="sbs">{cols}</div>'


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
            + "".join(f"<li>{escape(f)}</li>" for f in flags)
            + "</ul></div>"
        )
    else:
        box = '<div class="ok">No flags: nothing in these numbers calls for a warning.</div>'
    parts = [f"<h2>{escape(h)}</h2>{body}" for h, body in sections]
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{box}"
        f"{f'<p>{escape(summary)}</p>' if summary else ''}{''.join(parts)}</body></html>"
    )
