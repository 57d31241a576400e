/**
 * Stored providers for `carapace run` (routes that name a provider instead of an endpoint): read
 * from the caller's own gateway's store, directly — root's system store, or a normal user's
 * rootless one under their own state directory — and only the caller's own providers. The store and
 * its secret key are opened the first time a route needs one, never created. A member of the
 * `carapace` group whose providers live in the system gateway cannot read them this way (the store
 * is root's): such a run uses inline routes (`endpoint` and `credential_env` with `--credential`),
 * or runs in a gateway sandbox (docs/router.md, "carapace run").
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ProviderConfig } from '../../router/index.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';

export function storedProviders(
  dirs: StateDirs,
  uid: number,
): (name: string) => Promise<ProviderConfig | null> {
  let open: Promise<((name: string) => ProviderConfig | null) | null> | null = null;
  const load = async (): Promise<((name: string) => ProviderConfig | null) | null> => {
    const dbPath = join(dirs.state, 'gateway.db');
    const keyPath = join(dirs.state, 'secret.key');
    if (!existsSync(dbPath) || !existsSync(keyPath)) return null;
    const [{ Database }, { SecretBox }, { ProviderStore }] = await Promise.all([
      import('../../gateway/store/database.js'),
      import('../../gateway/store/secret-box.js'),
      import('../../gateway/store/provider-store.js'),
    ]);
    try {
      const store = new ProviderStore(new Database(dbPath), SecretBox.open(keyPath));
      return (name) => {
        const rec = store.get(uid, name);
        if (rec === null) return null;
        return {
          name: rec.name,
          type: rec.type,
          baseUrl: rec.baseUrl,
          apiKey: store.key(uid, name) ?? undefined,
        };
      };
    } catch {
      return null; // not readable by this user (the system gateway's): the route reports no provider
    }
  };
  return async (name) => {
    open ??= load();
    const lookup = await open;
    return lookup === null ? null : lookup(name);
  };
}
