"""The app's CSS, the keyboard / click script and the login page's rate-limit notice (static text, no user
data).

Ranking: click the candidate cards in order of preference — each card shows its rank as it is chosen, a
second click takes it back — or press their letters (Backspace undoes the last); the order box echoes it.
Pairwise: A / B / T (tie) / X (both bad) press the big buttons, which submit at once; binary: G (good) / B
(bad) press the thumbs buttons (a key presses only a visible button). Enter (Ctrl+Enter in a text box)
submits.
"""

CSS = """
footer { display: none !important; }
[id^="cand_"] { max-height: 60vh; overflow-y: auto; border: 1px solid #d0d7de; border-radius: 8px; position: relative; }
.ranking [id^="cand_"] { cursor: pointer; }
[id^="cand_"].ranked { outline: 3px solid #2563eb; }
[id^="cand_"][data-rank]:not([data-rank=""])::before {
  content: "#" attr(data-rank); position: sticky; top: 4px; float: right; z-index: 2; background: #2563eb;
  color: white; font-weight: 700; border-radius: 12px; padding: 2px 10px; margin: 4px;
}
#prompt { max-height: 45vh; overflow-y: auto; }
#status { font-size: 1.05em; }
#status:not(:empty) { border-left: 4px solid #2ca02c; padding-left: 8px; }
.pick button, button.pick { font-size: 1.1em; min-height: 3em; }
#diff_view mark.add { background: #c7f0d2; }
#diff_view mark.del { background: #ffd0d0; text-decoration: line-through; }
#diff_view .diffcol { white-space: pre-wrap; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }
"""

KEYBOARD_JS = """
<script>
(() => {
  const q = (s) => document.querySelector(s);
  const setText = (el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); };
  const orderBox = () => q('#rank_order textarea, #rank_order input');
  const ranking = () => { const o = orderBox(); return o && o.offsetParent !== null; };
  const current = () => { const o = orderBox(); return o ? o.value.split(',').map((x) => x.trim()).filter(Boolean) : []; };
  const paint = () => {
    const list = ranking() ? current() : [];
    document.querySelectorAll('[id^="cand_"]').forEach((el) => {
      const i = list.indexOf(el.id.slice(5));
      el.dataset.rank = i >= 0 ? String(i + 1) : '';
      el.classList.toggle('ranked', i >= 0);
    });
    document.body.classList.toggle('ranking', ranking());
  };
  const setOrder = (list) => { const o = orderBox(); if (o) { setText(o, list.join(',')); paint(); } };
  const toggle = (letter) => {
    const cur = current(); const i = cur.indexOf(letter);
    if (i >= 0) cur.splice(i, 1); else cur.push(letter);
    setOrder(cur);
  };
  document.addEventListener('click', (e) => {
    const card = e.target.closest('[id^="cand_"]');
    if (!card || !ranking() || e.target.closest('a')) return;
    toggle(card.id.slice(5));
  });
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio' && t.type !== 'checkbox'));
    if (e.key === 'Enter' && (!typing || e.ctrlKey || e.metaKey)) {
      const b = q('#submit'); if (b && b.offsetParent !== null) { e.preventDefault(); b.click(); } return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toUpperCase();
    const picks = {A: ['#pick_A'], B: ['#pick_B', '#pick_bad'], T: ['#pick_tie'], X: ['#pick_both_bad'], G: ['#pick_good']}[k] || [];
    const pick = picks.map(q).find((b) => b && b.offsetParent !== null);
    if (pick) { e.preventDefault(); pick.click(); return; }
    if (ranking()) {
      if (e.key === 'Backspace') { setOrder(current().slice(0, -1)); e.preventDefault(); return; }
      if (/^[A-P]$/.test(k) && q('#cand_' + k) && q('#cand_' + k).offsetParent !== null) {
        const cur = current(); if (!cur.includes(k)) { cur.push(k); setOrder(cur); }
        e.preventDefault();
      }
    }
  });
  setInterval(paint, 250);  // a new item resets the order box: keep the badges in step
})();
</script>
"""

# Gradio's login form says only "Incorrect Credentials" (on a 400) and nothing on other answers: when the
# server asks to wait (429), show its "try again in N s" above the form, as text. The login page does not get
# the app's `head`: labeling_ui.gate adds this script to it.
LOGIN_JS = """
<script>
(() => {
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch0(...args);
    try {
      const target = args[0] && args[0].url ? args[0].url : String(args[0]);
      if (response.status === 429 && /\\/login\\/?$/.test(new URL(target, location.href).pathname)) {
        const detail = (await response.clone().json()).detail || 'Too many attempts; try again later.';
        let box = document.getElementById('login_wait');
        if (!box) {
          box = document.createElement('div');
          box.id = 'login_wait';
          box.setAttribute('role', 'alert');
          box.style.cssText = 'margin:12px auto;max-width:480px;padding:8px 12px;border-radius:6px;background:#fff4e5;color:#8a4b00;font-weight:600;text-align:center';
          document.body.prepend(box);
        }
        box.textContent = detail;
      }
    } catch (e) { /* not a login answer we can read: leave the page as it is */ }
    return response;
  };
})();
</script>
"""
