/**
 * Providers for a caller: create, list, get, update, delete, test. A provider belongs to one user
 * (the uid that created it) and serves only that user's sandboxes; another user's provider is
 * simply not found. Root and members of carapace-admin may act on anyone's with `owner`. There are
 * no shared providers: a provider root made serves root's own sandboxes.
 *
 * The key arrives once (in a request body over the caller's socket, never in argv), is sealed at
 * rest (store/provider-store.ts) and is never in a view, a log line or an audit event: views carry
 * its fingerprint. The router gets providers through `directory()`, which maps a sandbox id to its
 * owner's providers.
 */
import { PROVIDER_NAME, PROVIDER_TYPES, type ProviderType } from '../../policy/index.js';
import {
  PROVIDER_INFO,
  probeProvider,
  type ProbeResult,
  type ProviderConfig,
  type ProviderDirectory,
  type TrustSource,
} from '../../router/index.js';
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { ProviderRecord, ProviderStore } from '../store/provider-store.js';
import type { SandboxStore } from '../store/sandbox-store.js';
import type { SecretBox } from '../store/secret-box.js';

export interface ProviderView {
  name: string;
  owner: number;
  type: ProviderType;
  baseUrl: string;
  /** `sha256:…` of the key; null when the provider has none. Never the key. */
  fingerprint: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ProviderInput {
  name: string;
  type: ProviderType;
  baseUrl?: string | undefined;
  /** The key (from the caller's environment or stdin, sent in the body). */
  credential?: string | undefined;
}

export interface ProviderServiceOptions {
  providers: ProviderStore;
  sandboxes: SandboxStore;
  secrets: SecretBox;
  /** What providers' TLS trusts (the proxy's, as the router has it). */
  upstreamTrust?: TrustSource | undefined;
  log?: (entry: Record<string, unknown>) => void;
}

export class ProviderService {
  constructor(private readonly opts: ProviderServiceOptions) {}

  view(r: ProviderRecord): ProviderView {
    return {
      name: r.name,
      owner: r.ownerUid,
      type: r.type,
      baseUrl: r.baseUrl,
      fingerprint: r.fingerprint,
      createdAt: new Date(r.createdAt).toISOString(),
      updatedAt: new Date(r.updatedAt).toISOString(),
    };
  }

  private ownerFor(caller: Caller, owner: number | undefined): number {
    if (owner !== undefined && owner !== caller.uid && !caller.admin)
      throw new ApiError(
        'FORBIDDEN',
        "only root and members of carapace-admin act on other users' providers",
      );
    return owner ?? caller.uid;
  }

  private found(caller: Caller, name: string, owner?: number): ProviderRecord {
    const uid = this.ownerFor(caller, owner);
    const rec = this.opts.providers.get(uid, name);
    if (rec === null)
      throw new ApiError(
        'PROVIDER_NOT_FOUND',
        `no provider named "${name}"${owner !== undefined ? ` of uid ${owner}` : ''} (carapace provider list)`,
      );
    return rec;
  }

  list(caller: Caller, all: boolean): ProviderRecord[] {
    if (all && !caller.admin)
      throw new ApiError('FORBIDDEN', 'only root and members of carapace-admin list every provider');
    return this.opts.providers.list(all ? undefined : caller.uid);
  }

  get(caller: Caller, name: string, owner?: number): ProviderRecord {
    return this.found(caller, name, owner);
  }

  create(caller: Caller, input: ProviderInput, owner?: number): ProviderRecord {
    const uid = this.ownerFor(caller, owner);
    if (!PROVIDER_NAME.test(input.name))
      throw new ApiError(
        'INVALID_INPUT',
        `"${input.name}" is not a provider name: at most 63 lower case letters, digits, '.', '_' and '-', starting with a letter or digit`,
      );
    const baseUrl = checkedBaseUrl(input.type, input.baseUrl);
    const key = checkedKey(input.type, input.credential);
    if (!this.opts.providers.create({ ownerUid: uid, name: input.name, type: input.type, baseUrl, key }))
      throw new ApiError(
        'PROVIDER_EXISTS',
        `you already have a provider named "${input.name}": update it (carapace provider update) or pick another name`,
      );
    this.opts.log?.({
      level: 'info',
      msg: 'provider created',
      provider: input.name,
      owner: uid,
      type: input.type,
    });
    return this.opts.providers.get(uid, input.name) as ProviderRecord;
  }

  update(
    caller: Caller,
    name: string,
    patch: {
      type?: ProviderType | undefined;
      baseUrl?: string | undefined;
      credential?: string | null | undefined;
    },
    owner?: number,
  ): ProviderRecord {
    const cur = this.found(caller, name, owner);
    const type = patch.type ?? cur.type;
    const baseUrl =
      patch.baseUrl !== undefined
        ? checkedBaseUrl(type, patch.baseUrl)
        : patch.type !== undefined && patch.type !== cur.type
          ? baseUrlForNewType(cur, type, patch.credential !== undefined)
          : undefined;
    let key: string | null | undefined;
    if (patch.credential === null) {
      if (!PROVIDER_INFO[type].keyOptional)
        throw new ApiError(
          'INVALID_INPUT',
          `${aProvider(type)} needs a key; give a new one instead of removing it`,
        );
      key = null;
    } else if (patch.credential !== undefined) key = checkedKey(type, patch.credential);
    else if (cur.fingerprint === null && !PROVIDER_INFO[type].keyOptional)
      throw new ApiError(
        'INVALID_INPUT',
        `${aProvider(type)} needs a key: add --credential-env VAR or --credential-stdin`,
      );
    const rec = this.opts.providers.update(cur.ownerUid, name, {
      type: patch.type,
      baseUrl,
      key,
    }) as ProviderRecord;
    this.opts.log?.({
      level: 'info',
      msg: 'provider updated',
      provider: name,
      owner: cur.ownerUid,
      key_changed: key !== undefined,
    });
    return rec;
  }

  delete(caller: Caller, name: string, owner?: number): void {
    const rec = this.found(caller, name, owner);
    this.opts.providers.delete(rec.ownerUid, name);
    this.opts.log?.({ level: 'info', msg: 'provider deleted', provider: name, owner: rec.ownerUid });
  }

  /** One minimal request to the provider, with its key: latency and the models it lists. */
  async test(caller: Caller, name: string, owner?: number): Promise<ProbeResult> {
    const rec = this.found(caller, name, owner);
    return probeProvider(this.config(rec), { upstreamTrust: this.opts.upstreamTrust });
  }

  /** The provider as the router uses it, key unsealed. */
  config(rec: ProviderRecord): ProviderConfig {
    const key = this.opts.providers.key(rec.ownerUid, rec.name);
    return { name: rec.name, type: rec.type, baseUrl: rec.baseUrl, apiKey: key ?? undefined };
  }

  /** For the router: a sandbox uses its owner's providers, and its own sealed credentials. */
  directory(): ProviderDirectory {
    return {
      named: (sandbox, name) => {
        const sb = this.opts.sandboxes.get(sandbox);
        if (sb === null) return null;
        const rec = this.opts.providers.get(sb.ownerUid, name);
        return rec === null ? null : this.config(rec);
      },
      credential: (sandbox, name) => {
        const sealed = this.opts.sandboxes.secrets(sandbox).get(name);
        return sealed === undefined ? undefined : this.opts.secrets.unseal(sealed, `${sandbox}/${name}`);
      },
    };
  }
}

function checkedBaseUrl(type: ProviderType, given: string | undefined): string {
  if (!(PROVIDER_TYPES as readonly string[]).includes(type))
    throw new ApiError('INVALID_INPUT', `provider type "${type}" is not one of ${PROVIDER_TYPES.join(', ')}`);
  const url = given ?? PROVIDER_INFO[type].defaultBaseUrl;
  if (url === null)
    throw new ApiError(
      'INVALID_INPUT',
      `${aProvider(type)} needs --base-url (e.g. http://127.0.0.1:8000/v1)`,
    );
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ApiError('INVALID_INPUT', `--base-url "${url}" is not a URL (e.g. https://api.example.com/v1)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new ApiError('INVALID_INPUT', `--base-url "${url}" must be http or https`);
  if (parsed.username !== '' || parsed.password !== '' || parsed.search !== '' || parsed.hash !== '')
    throw new ApiError('INVALID_INPUT', '--base-url must not carry credentials, a query or a fragment');
  return url.replace(/\/+$/, '');
}

/**
 * The base URL when only the type changes. A custom endpoint stays where it is (the same server,
 * now spoken to as another type). A provider at its old type's default service moves to the new
 * type's default only with a new key or none: the stored key was issued by the old service, and
 * sending it to another company's API unasked would leak it there.
 */
function baseUrlForNewType(cur: ProviderRecord, type: ProviderType, newKey: boolean): string {
  const next = PROVIDER_INFO[type].defaultBaseUrl;
  if (cur.baseUrl !== PROVIDER_INFO[cur.type].defaultBaseUrl || next === null || next === cur.baseUrl)
    return checkedBaseUrl(type, cur.baseUrl);
  if (cur.fingerprint !== null && !newKey)
    throw new ApiError(
      'INVALID_INPUT',
      `--type ${type} would move "${cur.name}" from ${cur.baseUrl} to ${next} with ${cur.type}'s key: ` +
        `give the key for it too (--credential-env VAR or --credential-stdin), or --base-url to stay`,
    );
  return checkedBaseUrl(type, next);
}

function checkedKey(type: ProviderType, key: string | undefined): string | null {
  if (key === undefined || key === '') {
    if (PROVIDER_INFO[type].keyOptional) return null;
    throw new ApiError(
      'INVALID_INPUT',
      `${aProvider(type)} needs a key: --credential-env VAR (the key in $VAR) or --credential-stdin`,
    );
  }
  if (/[\r\n\0]/.test(key) || key.length > 4096)
    throw new ApiError('INVALID_INPUT', 'the key must be one line of at most 4096 characters');
  return key;
}

/** "an openai provider", "a vllm provider": the article the type's first letter takes. */
function aProvider(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type} provider`;
}
