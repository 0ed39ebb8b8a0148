"""Untrusted text -> safe Markdown. Model output and prompts may carry HTML or script links: they stay text.

Raw HTML is escaped (so `<script>` and `<img onerror=...>` show literally), and Markdown links or images
whose target is not http(s)/mailto (e.g. `javascript:`, `data:`) are defused. Markdown formatting itself
(lists, emphasis, code) still renders. Gradio's own sanitizer stays on as a second layer.
"""

from __future__ import annotations

import html
import re

_LINK = re.compile(r"(!?\[[^\]]*\])\(\s*<?([^)\s>]*)>?([^)]*)\)")
_SAFE_SCHEME = re.compile(r"^(https?:|mailto:|#|/(?!/))", re.IGNORECASE)
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def safe_markdown(text: str) -> str:
    escaped = html.escape(text or "", quote=False)

    def defuse(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if _SAFE_SCHEME.match(target):
            return m.group(0)
        return f"{label.lstrip('!')} (link removed: {html.escape(target)[:40]})"

    return _LINK.sub(defuse, escaped)


def render_prompt(prompt) -> str:
    """A prompt (string or message list) as Markdown; a conversation is shown turn by turn."""
    if isinstance(prompt, str):
        return safe_markdown(prompt)
    parts = []
    for m in prompt:
        role = ROLE_NAMES.get(m.get("role"), html.escape(str(m.get("role"))))
        parts.append(f"**{role}:**\n\n{safe_markdown(m.get('content', ''))}")
    return "\n\n---\n\n".join(parts)
