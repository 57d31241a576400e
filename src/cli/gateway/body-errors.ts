/**
 * The gateway names a bad part of a request the way its schema does: `body.workspace: …`,
 * `path.name: …` (src/gateway/api/router.ts). A user typed flags, not a body: a field a flag sets
 * reads as that flag (`--workspace: …`, `--label "bad key": …`), a field no flag sets as its path
 * without the API's `body.`, and the sandbox name argument (`path.name`) as the message alone.
 */

/** The flag (or words) for each body field, by the request that carries it. */
const FLAGS: readonly { method: string; path: RegExp; flags: Readonly<Record<string, string>> }[] = [
  {
    method: 'POST',
    path: /^\/v1\/sandboxes$/,
    flags: {
      name: '--name',
      command: 'the command (after --)',
      policy: '--policy',
      workspace: '--workspace',
      env: '--env',
      credentials: '--credential',
      mounts: '--mount',
      forwards: '--forward',
      labels: '--label',
      restart: '--restart',
      start: '--no-start',
    },
  },
  {
    method: 'PATCH',
    path: /^\/v1\/sandboxes\/[^/]+$/,
    flags: { restart: '--restart', labels: '--label' },
  },
  {
    method: 'POST',
    path: /^\/v1\/providers$/,
    flags: {
      name: 'the provider name',
      type: '--type',
      baseUrl: '--base-url',
      credential: '--credential-env',
    },
  },
  {
    method: 'PATCH',
    path: /^\/v1\/providers\/[^/]+$/,
    flags: { type: '--type', baseUrl: '--base-url', credential: '--credential-env' },
  },
  {
    method: '*',
    path: /^\/v1\/sandboxes\/[^/]+\/policy(\/operations|\/rollback)?$/,
    flags: {
      policy: 'FILE',
      baseRev: '--base-rev',
      restart: '--restart',
      to: '--to',
      operations: 'the operations',
    },
  },
];

const ordinal = (n: number) =>
  `${n}${n % 10 === 1 && n !== 11 ? 'st' : n % 10 === 2 && n !== 12 ? 'nd' : n % 10 === 3 && n !== 13 ? 'rd' : 'th'}`;

/**
 * `message` as the user should read it. `issues` is the error's `details` (zod's issues, the
 * first of which the message names); a message that is not about a field comes back unchanged.
 */
export function inFlagWords(method: string, requestPath: string, message: string, issues: unknown): string {
  if (message.startsWith('path.name: ')) return message.slice('path.name: '.length);
  if (message !== 'body' && !message.startsWith('body: ') && !message.startsWith('body.')) return message;
  const first = Array.isArray(issues)
    ? (issues[0] as { path?: unknown; message?: unknown } | undefined)
    : undefined;
  const path = first?.path;
  if (!Array.isArray(path) || typeof first?.message !== 'string') return message.replace(/^body(\.|: )/, '');
  const what = first.message;
  if (path.length === 0) return what;
  const bare = requestPath.replace(/\?.*$/, '');
  const flags = FLAGS.find((r) => (r.method === '*' || r.method === method) && r.path.test(bare))?.flags;
  const [field, ...rest] = path as (string | number)[];
  const flag =
    typeof field === 'string' && flags !== undefined && Object.hasOwn(flags, field)
      ? flags[field]
      : undefined;
  if (flag === undefined) return `${path.join('.')}: ${what}`;
  const where = rest.map((seg, i) =>
    typeof seg === 'number' ? `(the ${ordinal(seg + 1)})` : i === 0 ? JSON.stringify(seg) : seg,
  );
  return `${[flag, ...where].join(' ')}: ${what}`;
}
