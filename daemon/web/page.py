"""The status page: one self-contained HTML document (inline CSS, a few lines of inline JS for
the buttons and auto-refresh, an inline SVG map), readable on a phone. Pure: a status report in,
HTML out. Every value from the queue is escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from daemon import __version__
from daemon.status import backup_line, human_bytes, needs_attention

MAX_ATTENTION_ROWS = 50
RECENT_CLUSTERS = 10
REFRESH_SECONDS = 15

_CSS = """
body{font:16px/1.4 system-ui,-apple-system,sans-serif;margin:0;background:#eef1f4;color:#1d2329}
main{max-width:760px;margin:0 auto;padding:12px}
h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.05em;margin:0 0 .5em}
section{background:#fff;border-radius:10px;padding:12px 14px;margin:0 0 12px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.banner{padding:10px 14px;border-radius:10px;margin:0 0 12px;font-weight:600}
.paused{background:#fff3cd;color:#664d03}.held{background:#f8d7da;color:#58151c}
.offline{background:#e2e3e5;color:#2b2f32}
.counts{display:grid;grid-template-columns:repeat(auto-fill,minmax(104px,1fr));gap:8px}
.count{background:#f4f6f8;border-radius:8px;padding:6px 8px}
.count b{display:block;font-size:1.4em}.count span{font-size:.85em;color:#566}
.zero{opacity:.45}
table{width:100%;border-collapse:collapse;font-size:.9em}
td,th{text-align:left;padding:4px 6px;border-top:1px solid #e3e6e9;vertical-align:top}
td.path{word-break:break-all}.muted{color:#667;font-size:.85em}
progress{width:100%;height:14px}
.buttons{display:flex;gap:8px;flex-wrap:wrap}
button{font:inherit;padding:10px 16px;border-radius:8px;border:1px solid #b6bec6;background:#fff}
button.primary{background:#1d6fb8;color:#fff;border-color:#1d6fb8}
svg.map{width:100%;height:auto;border-radius:8px}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:0}dt{color:#566}dd{margin:0}
"""

_JS = """
function act(path){
  var msg=document.getElementById('action-result');
  fetch(path,{method:'POST',headers:{'X-Requested-With':'mapillaryd'},credentials:'same-origin'})
    .then(function(r){return r.json().then(function(j){return [r.ok,j];});})
    .then(function(x){msg.textContent=x[1].message||'';if(x[0]){setTimeout(function(){
      location.reload();},300);}})
    .catch(function(e){msg.textContent='failed: '+e;});
}
var auto=setTimeout(function(){location.reload();},%d);
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def render_page(rep: dict[str, Any], map_svg: str) -> str:
    """The whole page for ``rep`` (a :func:`daemon.status.report` with live data) and the
    map's SVG (from :func:`daemon.web.svgmap.render_svg`)."""
    body = [
        '<main><h1>mapillaryd <span class="muted">status</span></h1>',
        _banners(rep),
        _buttons(rep),
        _queue(rep),
        _uploading(rep),
        _attention(rep),
        _connection(rep),
        _clusters(rep),
        f'<section id="map"><h2>Recent tracks</h2>{map_svg}</section>',
        _backup(rep),
        f'<p class="muted">mapillaryd {_t(__version__)} · generated {_t(rep["generated_at"])}'
        f' · refreshes every {REFRESH_SECONDS} s · <a href="api/status">JSON</a> · '
        '<a href="metrics">metrics</a></p></main>',
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>mapillaryd — {_t(_headline(rep))}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}<script>{_JS % (REFRESH_SECONDS * 1000)}</script></body></html>"
    )


def _headline(rep: dict[str, Any]) -> str:
    if rep["hold"]:
        return "uploads held"
    if rep["paused"]:
        return "paused"
    if rep["uploading"]:
        return f"uploading {len(rep['uploading'])}"
    return f"{rep['items'].get('done', 0)} uploaded"


def _banners(rep: dict[str, Any]) -> str:
    out = []
    if rep["paused"]:
        p = rep["paused"]
        out.append(
            f'<div class="banner paused" id="paused-banner">Uploads paused since '
            f"{_t(p.get('since', '?'))} by {_t(p.get('by', '?'))}.</div>"
        )
    if rep["hold"]:
        h = rep["hold"]
        out.append(
            f'<div class="banner held" id="hold-banner">Uploads held ({_t(h["reason"])}) since '
            f"{_t(h['since'])}: {_t(h['detail'])}</div>"
        )
    if (rep["waiting"]["by_reason"] or {}).get("network"):
        out.append(
            '<div class="banner offline" id="offline-banner">Offline: Mapillary could not be '
            f"reached; {rep['waiting']['by_reason']['network']} file(s) wait to retry.</div>"
        )
    return "".join(out)


def _buttons(rep: dict[str, Any]) -> str:
    paused = bool(rep["paused"])
    toggle = (
        '<button class="primary" id="btn-resume" onclick="act(\'api/resume\')">Resume uploads'
        "</button>"
        if paused
        else '<button id="btn-pause" onclick="act(\'api/pause\')">Pause uploads</button>'
    )
    return (
        f'<section id="actions" data-paused="{str(paused).lower()}"><div class="buttons">'
        f'{toggle}<button id="btn-retry" onclick="act(\'api/retry\')">Retry now</button></div>'
        '<p class="muted" id="action-result" aria-live="polite"></p>'
        "<noscript><p>The buttons need JavaScript; the command line has "
        "<code>mapillaryd pause|resume|queue retry</code>.</p></noscript></section>"
    )


def _queue(rep: dict[str, Any]) -> str:
    cells = []
    for state, n in rep["items"].items():
        cls = "count" if n else "count zero"
        cells.append(
            f'<div class="{cls}"><b id="count-{_t(state)}">{n}</b><span>{_t(state)}</span></div>'
        )
    seqs = ", ".join(f"{n} {_t(s)}" for s, n in sorted(rep["sequences"].items())) or "none yet"
    return (
        f'<section id="queue"><h2>Queue: <span id="total">{rep["total"]}</span> files</h2>'
        f'<div class="counts">{"".join(cells)}</div>'
        f'<p class="muted">{rep["files_seen"]} files seen · sequences: {seqs} · uploaded '
        f'<span id="uploaded-bytes" data-bytes="{rep["uploaded_bytes"]}">'
        f"{human_bytes(rep['uploaded_bytes'])}</span> · "
        f'<span id="retries">{rep["retries"]}</span> attempts retried</p></section>'
    )


def _uploading(rep: dict[str, Any]) -> str:
    rows = []
    for u in rep["uploading"]:
        if u["total"]:
            bar = (
                f'<progress max="{u["total"]}" value="{u["sent"]}"></progress>'
                f'<div class="muted">{human_bytes(u["sent"])} of {human_bytes(u["total"])}</div>'
            )
        else:
            bar = '<span class="muted">in progress</span>'
        rows.append(f'<tr><td class="path">{_t(u["path"])}</td><td>{bar}</td></tr>')
    inner = f"<table>{''.join(rows)}</table>" if rows else '<p class="muted">Nothing right now.</p>'
    return (
        f'<section id="uploading"><h2>Uploading now (<span id="uploading-count">'
        f"{len(rep['uploading'])}</span>)</h2>{inner}</section>"
    )


def _attention(rep: dict[str, Any]) -> str:
    problems = needs_attention(rep)
    rows = []
    for r in problems[:MAX_ATTENTION_ROWS]:
        detail = f'<div class="muted">{_t(r["detail"])}</div>' if r["detail"] else ""
        rows.append(
            f"<tr><td>{_t(r['state'])}</td><td>{_t(r['reason'])}</td>"
            f'<td class="path">{_t(r["path"])}{detail}</td></tr>'
        )
    more = (
        f'<p class="muted">… and {len(problems) - MAX_ATTENTION_ROWS} more '
        "(<code>mapillaryd queue list</code>).</p>"
        if len(problems) > MAX_ATTENTION_ROWS
        else ""
    )
    inner = (
        f"<table><tr><th>state</th><th>reason</th><th>file</th></tr>{''.join(rows)}</table>{more}"
        if rows
        else '<p class="muted">Nothing needs attention.</p>'
    )
    return (
        f'<section id="attention"><h2>Needs attention (<span id="attention-count">'
        f"{len(problems)}</span>)</h2>{inner}</section>"
    )


def _connection(rep: dict[str, Any]) -> str:
    hold = rep["hold"]
    auth = f"held: {hold['reason']}" if hold else "ok"
    waiting = rep["waiting"]
    by_reason = waiting["by_reason"]
    network = "offline (last attempt failed)" if by_reason.get("network") else "ok"
    if rep.get("upstream_pause_seconds"):
        network += f"; server asked to wait {rep['upstream_pause_seconds']:g} s"
    wait_text = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items())) or "none"
    if waiting["next_attempt_at"] is not None:
        at = datetime.fromtimestamp(waiting["next_attempt_at"], UTC)
        wait_text += f" (next {at.isoformat(timespec='seconds')})"
    disks = []
    for d in rep.get("disk") or []:
        if "error" in d:
            disks.append(f"{d['role']}: {d['error']}")
        else:
            disks.append(
                f"{d['role']}: {human_bytes(d['free_bytes'])} free of "
                f"{human_bytes(d['total_bytes'])}"
            )
    return (
        '<section id="connection"><h2>Connection and disk</h2><dl>'
        f'<dt>token</dt><dd id="auth-state">{_t(auth)}</dd>'
        f'<dt>network</dt><dd id="network-state">{_t(network)}</dd>'
        f'<dt>waiting</dt><dd id="waiting">{_t(wait_text)}</dd>'
        f'<dt>disk</dt><dd id="disk-state">{_t("; ".join(disks) or "unknown")}</dd>'
        "</dl></section>"
    )


def _clusters(rep: dict[str, Any]) -> str:
    clusters = rep["clusters"]
    rows = [
        f"<tr><td>{_t(c['cluster_id'])}</td><td>{c['images']} images</td></tr>"
        for c in reversed(clusters[-RECENT_CLUSTERS:])
    ]
    inner = f"<table>{''.join(rows)}</table>" if rows else '<p class="muted">None yet.</p>'
    return (
        f'<section id="clusters"><h2>Recent clusters (<span id="clusters-count">'
        f"{len(clusters)}</span> in all)</h2>{inner}</section>"
    )


def _backup(rep: dict[str, Any]) -> str:
    backup = rep.get("backup") or {}
    return (
        '<section id="backup"><h2>Archive backup</h2>'
        f'<p id="backup-state">{_t(backup_line(backup))}</p></section>'
    )
