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
 * destroyed if it has not closed within `graceMs` of having everything.
 */
import type { Duplex } from 'node:stream';

/** How long a client that has been sent everything may keep its side open. */
const CLIENT_GRACE_MS = 30_000;

export function splice(client: Duplex, inside: Duplex, graceMs = CLIENT_GRACE_MS): void {
  // 'close' follows every error, and says all that is needed.
  client.on('error', () => {});
  inside.on('error', () => {});
  client.once('close', () => inside.destroy());
  inside.once('close', () => {
    client.unpipe(inside);
    client.resume(); // nowhere for it to go now: read and dropped, so the client's end is seen
    client.end(); // not destroyed: what the inside wrote last (an exec's EXIT frame) must arrive
    const giveUp = () => {
      const timer = setTimeout(() => client.destroy(), graceMs);
      timer.unref();
      client.once('close', () => clearTimeout(timer));
    };
    if (client.writableFinished) giveUp();
    else client.once('finish', giveUp);
  });
  client.pipe(inside);
  inside.pipe(client);
  client.resume();
}
