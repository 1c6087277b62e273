// Live board: Server-Sent Events from whichever replica the balancer picks; while replicas
// refuse more streams, the board read every 2 s. Watching counts no views. Without JavaScript the page works as before, with its refresh option.
(() => {
  const me = document.body.dataset.replica;
  const status = document.getElementById('stream-status');
  // A replica gone with its machine closes nothing and answers nothing: no read waits
  // longer than this for one.
  const GIVE_UP_MS = 5000;
  let retry;

  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function replaceBoard(html) {
    const box = document.createElement('div');
    box.innerHTML = html;
    const fresh = box.firstElementChild;
    if (!fresh) return;
    for (const tile of fresh.querySelectorAll('[data-hostname]')) {
      tile.classList.toggle('current', tile.dataset.hostname === me);
    }
    document.getElementById('board').replaceWith(fresh);
  }

  // A board, from a stream event or from /api/board?html.
  function draw(data) {
    replaceBoard(data.html);
    // The board may be up to a beat older than this page's own count: never go back.
    const count = document.getElementById('count');
    if (data.hits !== null && data.hits > Number(count.textContent)) count.textContent = data.hits;
  }

  // The stream is read with fetch rather than EventSource, which hides a refusal's status
  // and Retry-After. A replica that dies with its machine closes nothing: its stream just
  // goes quiet. Each event says how soon the next one is due; a stream quiet for twice
  // that, and at least 5 s, is dropped, and the balancer picks another replica.
  async function connect() {
    clearTimeout(retry);
    const quiet = new AbortController();
    const heard = { at: Date.now(), due: 0 };
    const watch = setInterval(() => {
      if (Date.now() - heard.at > Math.max(GIVE_UP_MS, 2 * heard.due)) quiet.abort();
    }, 500);
    let answer;
    try {
      answer = await fetch('/api/board/stream', { cache: 'no-store', signal: quiet.signal });
      if (answer.ok) await readEvents(answer.body, heard);
    } catch (_) {
      // No answer, or dropped as quiet: try again below.
    } finally {
      clearInterval(watch);
    }
    if (answer && !answer.ok) {
      answer.body?.cancel();
      // Refused: that replica is stopping (Retry-After 1), or streams to as many pages as
      // it may. Read the board now and then until the wait is over.
      const wait = Math.min(60, Math.max(1, Number(answer.headers.get('Retry-After')) || 1));
      if (wait > 1) return poll(wait);
      return later(wait);
    }
    if (quiet.signal.aborted) {
      const silent = Math.round((Date.now() - heard.at) / 1000);
      return later(1, 'no board for ' + silent + ' s: reconnecting');
    }
    later(1);
  }

  // The replica streaming to us stopped, is draining or went quiet: try again, the
  // balancer picks another one.
  function later(seconds, why = 'reconnecting') {
    show('down', why);
    retry = setTimeout(connect, seconds * 1000);
  }

  // Each `data:` line of each event is one board; `heard` notes when, and when the next
  // is due.
  async function readEvents(body, heard) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const line = event.split('\n').find((l) => l.startsWith('data: '));
          if (!line) continue;
          const data = JSON.parse(line.slice(6));
          heard.at = Date.now();
          if (data.next_within_ms > 0) heard.due = data.next_within_ms;
          draw(data);
          show('live', 'live from ' + data.read_by);
        }
      }
    } catch (_) {
      // The connection broke: reconnect.
    }
  }

  // Streams refused: read /api/board every few seconds, then ask for a stream again.
  async function poll(wait) {
    const until = Date.now() + wait * 1000;
    while (Date.now() < until) {
      try {
        const answer = await fetch('/api/board?html', { cache: 'no-store', signal: AbortSignal.timeout(GIVE_UP_MS) });
        if (answer.ok) {
          const data = await answer.json();
          draw(data);
          show('polling', 'streams full: board read every 2 s, from ' + data.read_by);
        }
      } catch (_) {
        show('down', 'reconnecting');
      }
      await new Promise((done) => setTimeout(done, 2000));
    }
    connect();
  }

  // N counted views, each on a new connection (`?close` asks the replica to close it), so
  // a balancer spreads them over the replicas.
  async function spread(n) {
    const result = document.getElementById('spread-result');
    const tally = new Map();
    let failed = 0;
    for (let i = 0; i < n; i++) {
      result.textContent = 'view ' + (i + 1) + ' of ' + n;
      try {
        const answer = await fetch('/api?close', { cache: 'no-store', signal: AbortSignal.timeout(GIVE_UP_MS) });
        if (!answer.ok) { failed++; continue; }
        const view = await answer.json();
        const seen = tally.get(view.hostname) || { n: 0, colour: view.colour };
        seen.n++;
        tally.set(view.hostname, seen);
      } catch (_) {
        failed++;
      }
    }
    const answered = n - failed;
    result.textContent = answered + (answered === 1 ? ' view' : ' views') + ' answered by ' + tally.size + ' replica(s): ';
    for (const [host, seen] of [...tally].sort((a, b) => b[1].n - a[1].n)) {
      const chip = document.createElement('span');
      chip.className = 'chip';
      chip.dataset.hostname = host;
      chip.style.setProperty('--c', seen.colour);
      chip.textContent = host + ' × ' + seen.n;
      result.append(chip, ' ');
    }
    if (failed) result.append(failed + ' failed.');
  }

  document.getElementById('spread').hidden = false;
  document.getElementById('spread-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const n = Math.min(100, Math.max(1, Number(document.getElementById('spread-n').value) || 20));
    spread(n);
  });
  connect();
})();
