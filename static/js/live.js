// The project's websocket, for the pages that show live events (annotate.js, analyses.js):
// opens `path`, hands each JSON message to `onMessage`, and reconnects with backoff (2 s, then
// doubling up to 60 s; 1 s after a connection that opened) unless the server closed it for
// good (4404: no such project, or the user lost access).
window.listenToProject = function (path, onMessage) {
  "use strict";
  if (!("WebSocket" in window)) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  function listen(delay) {
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}${path}`);
    } catch (err) {
      return;
    }
    ws.onopen = () => {
      delay = 1000;
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (ev.code !== 4404) setTimeout(() => listen(Math.min(60000, delay * 2)), delay);
    };
  }
  listen(2000);
};
