/**
 * Which gateway the caller talks to, without loading the client (`carapace run` asks on its
 * fastest path). Root talks to the system gateway (`<run>/gateway.sock`). A normal user talks to
 * the system gateway through their own socket (`<system run>/users/<uid>.sock`, present when they
 * are in the `carapace` group), and otherwise to a rootless gateway of their own under their XDG
 * directories. `CARAPACE_HOME` moves both (tests).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { stateDirs, type StateDirs } from '../../sandbox/state-dirs.js';

export interface GatewayEndpoint {
  socket: string;
  /** True when this is a gateway the caller runs (and may start): root's, or a user's rootless one. */
  own: boolean;
  dirs: StateDirs;
}

export function gatewayEndpoint(env: NodeJS.ProcessEnv = process.env): GatewayEndpoint {
  const dirs = stateDirs(env);
  const uid = process.getuid?.() ?? 0;
  const own = { socket: join(dirs.run, 'gateway.sock'), own: true, dirs };
  if (uid === 0) return own;
  const systemRun = env.CARAPACE_HOME ? dirs.run : '/run/carapace';
  const mine = join(systemRun, 'users', `${uid}.sock`);
  return existsSync(mine) ? { socket: mine, own: false, dirs } : own;
}
