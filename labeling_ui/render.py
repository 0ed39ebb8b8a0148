"""Untrusted text -> safe Markdown. Model output, prompts, guidelines, gold notes, model names and usernames
may carry HTML or script links: they must stay text, while Markdown itself (lists, emphasis, code) renders
faithfully where it is meant to.

One path to the page: every text the app shows goes through this module — rich text (candidates, prompts,
guidelines) through `safe_markdown`, plain text (names, status lines with the gold notes, arena reveals and
refusals they quote, Admin messages) through `plain_markdown` / `status_markdown`, the difference view through
`word_diff_html` — and `escape_html` is the one HTML escape all of them use (no other module escapes).

- Raw HTML outside code is escaped, so `<script>` and `<img onerror=...>` show literally.
- Code is left alone: inside fenced blocks (``` / ~~~) and inline code spans the Markdown renderer already
  shows every character as text, so `<script>` in a code block reads `<script>`, not `&lt;script&gt;`.
- Links and images — inline `[x](target)` and reference definitions `[ref]: target` — whose target is not
  http(s)/mailto/relative (e.g. `javascript:`, `data:`, `vbscript:`) are defused by us, not only by the
  front end's sanitizer, which stays on as a second layer.
"""

from __future__ import annotations

import difflib
import html
import re

_LINK = re.compile(r"(!?\[[^\]]*\])\(\s*<?([^)\s>]*)>?([^)]*)\)")
_REF_DEF = re.compile(r"^( {0,3}\[[^\]]+\]:[ \t]*)<?(\S*?)>?(\s.*)?$")
_SAFE_SCHEME = re.compile(r"^(https?:|mailto:|#|/(?!/))", re.IGNORECASE)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_MD_INLINE = re.compile(r"([\\`*_\[\]~$|])")  # Markdown's inline punctuation; HTML is escape_html's
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def escape_html(text: str) -> str:
    """The one HTML escape of the app (`&`, `<`, `>`): text placed between tags shows as itself."""
    return html.escape(text, quote=False)


def _removed(target: str) -> str:
    """A removed link target, shortened as written and escaped once."""
    return escape_html(target[:40])


def _defuse(m: re.Match) -> str:
    label, target = m.group(1), m.group(2)
    if not target or _SAFE_SCHEME.match(target):
        return m.group(0)
    # the line is already escaped here (`_text_part`): undo that for the note, which `_removed` escapes once
    return f"{label.lstrip('!')} (link removed: {_removed(html.unescape(target))})"


def _text_part(text: str) -> str:
    """Plain Markdown outside code: HTML escaped, unsafe link targets defused."""
    return _LINK.sub(_defuse, escape_html(text))


def _line(line: str) -> str:
    ref = _REF_DEF.match(line)
    if ref and ref.group(2) and not _SAFE_SCHEME.match(ref.group(2)):
        return f"(link definition removed: {_removed(ref.group(2))})"
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(line):
        out.append(_text_part(line[pos : m.start()]))
        out.append(m.group(0))  # a code span: the renderer shows it verbatim
        pos = m.end()
    out.append(_text_part(line[pos:]))
    return "".join(out)


def safe_markdown(text: str) -> str:
    out: list[str] = []
    fence: str | None = None
    for line in (text or "").split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if (
                m
                and m.group(1)[0] == fence[0]
                and len(m.group(1)) >= len(fence)
                and not line[m.end() :].strip()
            ):
                fence = None
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            continue
        out.append(_line(line))
    if fence is not None:
        out.append(fence)  # close an unterminated block so it cannot swallow what the app shows after it
    return "\n".join(out)


def plain_markdown(text: str) -> str:
    """Text shown as itself within a line of Markdown (usernames, names, status lines): HTML escaped, then
    the inline Markdown characters (emphasis, code, links, strike-through, math, tables) backslash-escaped."""
    return _MD_INLINE.sub(r"\\\1", escape_html(text or ""))


def status_markdown(message: str) -> str:
    """A status line, in bold, as plain text on one line: the app's words and whatever they quote (a gold
    note, the models an arena reveals, the reason a submit was refused) show as typed, never as markup."""
    line = " ".join((message or "").split())
    return f"**{plain_markdown(line)}**" if line else ""


def render_prompt(prompt) -> str:
    """A prompt (string or message list) as Markdown; a conversation is shown turn by turn."""
    if isinstance(prompt, str):
        return safe_markdown(prompt)
    parts = []
    for m in prompt:
        role = ROLE_NAMES.get(m.get("role"), plain_markdown(str(m.get("role"))))
        parts.append(f"**{role}:**\n\n{safe_markdown(m.get('content', ''))}")
    return "\n\n---\n\n".join(parts)


def word_diff_html(a: str, b: str) -> str:
    """Two near-identical texts side by side, the words that differ marked (removed in A, added in B).
    Every word is HTML-escaped; only our own <mark>/<div> tags are markup."""
    wa, wb = re.split(r"(\s+)", a or ""), re.split(r"(\s+)", b or "")
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        xs, ys = "".join(wa[i1:i2]), "".join(wb[j1:j2])
        if op == "equal":
            left.append(escape_html(xs))
            right.append(escape_html(ys))
            continue
        if xs:
            left.append(f'<mark class="del">{escape_html(xs)}</mark>')
        if ys:
            right.append(f'<mark class="add">{escape_html(ys)}</mark>')
    return (
        '<div style="display:flex;gap:12px"><div class="diffcol" style="flex:1"><b>A</b><br>'
        + "".join(left)
        + '</div><div class="diffcol" style="flex:1"><b>B</b><br>'
        + "".join(right)
        + "</div></div>"
    )
