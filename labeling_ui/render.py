"""Untrusted text -> safe Markdown. Model output, prompts, guidelines and usernames may carry HTML or script
links: they must stay text, while Markdown itself (lists, emphasis, code) renders faithfully.

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
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&~])")
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def _defuse(m: re.Match) -> str:
    label, target = m.group(1), m.group(2)
    if not target or _SAFE_SCHEME.match(target):
        return m.group(0)
    return f"{label.lstrip('!')} (link removed: {html.escape(target)[:40]})"


def _text_part(text: str) -> str:
    """Plain Markdown outside code: HTML escaped, unsafe link targets defused."""
    return _LINK.sub(_defuse, html.escape(text, quote=False))


def _line(line: str) -> str:
    ref = _REF_DEF.match(line)
    if ref and ref.group(2) and not _SAFE_SCHEME.match(ref.group(2)):
        return f"(link definition removed: {html.escape(ref.group(2))[:40]})"
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
    """Text shown as itself in Markdown (usernames, names): every Markdown and HTML character escaped."""
    return _MD_SPECIAL.sub(r"\\\1", text or "")


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
            left.append(html.escape(xs))
            right.append(html.escape(ys))
            continue
        if xs:
            left.append(f'<mark class="del">{html.escape(xs)}</mark>')
        if ys:
            right.append(f'<mark class="add">{html.escape(ys)}</mark>')
    return (
        '<div style="display:flex;gap:12px"><div class="diffcol" style="flex:1"><b>A</b><br>'
        + "".join(left)
        + '</div><div class="diffcol" style="flex:1"><b>B</b><br>'
        + "".join(right)
        + "</div></div>"
    )
