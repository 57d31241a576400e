/**
 * Where Carapace keeps state and sockets (see docs/architecture.md, "Where things live").
 * Root: /var/lib/carapace and /run/carapace. A normal user: $XDG_STATE_HOME/carapace and
 * $XDG_RUNTIME_DIR/carapace. CARAPACE_HOME overrides both (tests always set it).
 */
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface StateDirs {
  state: string;
  run: string;
  /** CARAPACE_HOME, when it set both (sandbox uids must be able to traverse it). */
  home?: string | undefined;
}

export function stateDirs(env: NodeJS.ProcessEnv = process.env): StateDirs {
  if (env.CARAPACE_HOME)
    return {
      state: join(env.CARAPACE_HOME, 'state'),
      run: join(env.CARAPACE_HOME, 'run'),
      home: env.CARAPACE_HOME,
    };
  if (process.getuid?.() === 0) return { state: '/var/lib/carapace', run: '/run/carapace' };
  const stateHome = env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  const runtime = env.XDG_RUNTIME_DIR ?? join(tmpdir(), `carapace-${process.getuid?.() ?? 'user'}`);
  return { state: join(stateHome, 'carapace'), run: join(runtime, 'carapace') };
}
