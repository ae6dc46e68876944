// stream.js — the dashboard's one client for Server-Sent Events: an experiment's stream
// (metric, eval, status, end), the global /api/events (experiment) and a study's stream
// (study, run, end). It parses each
// event's JSON, resumes after a drop from the last event id so nothing is missed or seen
// twice, stops for good at `end`, and tells the page whether it is live.
//
// EventSource cannot set the Last-Event-ID header of its first request, so the starting
// cursor goes in the `last_event_id` query parameter (docs/api.md); on its own reconnects
// the browser sends the header, which the server prefers, with the newest id.

let openCount = 0; // streams currently connected, for the header's live dot

function announce(delta) {
  openCount = Math.max(0, openCount + delta);
  window.dispatchEvent(new CustomEvent('mapsage:live', {detail: {open: openCount}}));
}

// handlers: {eventName(data, id)}, plus optional onReopen() after a reconnect (a live-only
// stream such as /api/events has lost what happened meanwhile: the caller reloads).
export function openStream(path, handlers, {lastEventId = null, onReopen = null} = {}) {
  let source = null;
  let lastId = lastEventId;
  let closed = false;
  let connected = false;
  let opened = false;
  let retry = null;

  function setConnected(value) {
    if (value === connected) return;
    connected = value;
    announce(value ? 1 : -1);
  }

  function connect() {
    retry = null;
    const url = lastId ? `${path}?last_event_id=${encodeURIComponent(lastId)}` : path;
    source = new EventSource(url);
    source.onopen = () => {
      setConnected(true);
      if (opened && onReopen) onReopen();
      opened = true;
    };
    source.onerror = () => {
      if (closed) return;
      setConnected(false);
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (a 4xx/5xx answer,
      // such as 503 for too many streams); try again later from where we were.
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        retry = setTimeout(connect, 2000);
      }
    };
    for (const [type, handler] of Object.entries(handlers)) {
      source.addEventListener(type, (event) => {
        if (closed) return;
        if (event.lastEventId) lastId = event.lastEventId;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return; // not ours: the protocol's data is always JSON
        }
        handler(data, event.lastEventId);
        if (type === 'end') close();
      });
    }
  }

  function close() {
    if (closed) return;
    closed = true;
    clearTimeout(retry);
    if (source) source.close();
    setConnected(false);
  }

  connect();
  return {close, get lastEventId() { return lastId; }};
}
