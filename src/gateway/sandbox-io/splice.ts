/**
 * Two connections joined both ways: a client's (an exec stream, a port forward's TCP connection)
 * and the one the gateway opened for it inside the sandbox (the control socket, the forwarded port).
 *
 * `a.pipe(b); b.pipe(a)` alone leaks: when the inside closes, the client's side is unpiped and so
 * paused, and anything the client sent meanwhile (the STDIN_EOF frame an exec's client sends as the
 * process exits) stays unread in it. A paused stream with unread bytes never reports its peer's
 * end, so the client's close goes unseen and the gateway holds the descriptor for good (measured:
 * one in every ~75 create/exec/delete cycles). Here the client's side, once the inside is gone, is
 * ended (what was written still reaches it), read to its end with what it sends dropped, and
 * destroyed once it has made no progress for `graceMs`: neither read what is left for it nor
 * closed (a client that stops reading would otherwise hold it for as long as it likes).
 */
import type { Duplex } from 'node:stream';

/** How long a client whose inside is gone may go without reading what is left, or closing. */
const CLIENT_GRACE_MS = 30_000;

export function splice(client: Duplex, inside: Duplex, graceMs = CLIENT_GRACE_MS): void {
  // 'close' follows every error, and says all that is needed.
  client.on('error', () => {});
  inside.on('error', () => {});
  // One side may have gone before the other was opened (a forward's client that connected and
  // left while the gateway reached into the sandbox): its 'close' is not coming again.
  if (client.destroyed) {
    inside.destroy();
    return;
  }
  client.once('close', () => inside.destroy());
  const insideGone = () => {
    client.unpipe(inside);
    client.resume(); // nowhere for it to go now: read and dropped, so the client's end is seen
    client.end(); // not destroyed: what the inside wrote last (an exec's EXIT frame) must arrive
    let timer = setTimeout(() => client.destroy(), graceMs);
    timer.unref();
    const progress = () => {
      clearTimeout(timer);
      timer = setTimeout(() => client.destroy(), graceMs);
      timer.unref();
    };
    client.on('drain', progress);
    client.once('finish', progress);
    client.once('close', () => clearTimeout(timer));
  };
  if (inside.destroyed) {
    insideGone();
    return;
  }
  inside.once('close', insideGone);
  client.pipe(inside);
  inside.pipe(client);
  client.resume();
}
