/**
 * `carapace blueprint …`: publish (sign), check (verify), install, list, show and remove
 * blueprints (docs/blueprints.md). Verification is fail closed: no digest, an empty one, a digest
 * that does not match, a bad signature, or (when the caller trusts any key) no trusted signature
 * refuses the blueprint with one line and exit 1.
 */
import type { Command } from 'commander';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stateDirs } from '../../sandbox/state-dirs.js';
import {
  builtinBlueprintNames,
  builtinBlueprintsDir,
  isBuiltinDigest,
  resolveBlueprint,
} from '../../blueprint/catalog.js';
import { computeDigest, DIGEST_FILE, SIGNATURE_FILE } from '../../blueprint/digest.js';
import { loadBlueprintManifest } from '../../blueprint/manifest.js';
import { generateSigningKey, readTrustedKeys, signDigest } from '../../blueprint/signature.js';
import {
  BlueprintStore,
  verifyBlueprint,
  type TrustSettings,
  type VerifiedBlueprint,
} from '../../blueprint/store.js';
import { ImageStore, imageId } from '../../blueprint/image.js';
import { ownArch } from './blueprint-host.js';
import { UsageError } from '../errors.js';
import { say } from '../say.js';
import { outputOption } from '../output-option.js';
import { table } from '../terminal.js';
import { carapaceVersion } from '../version.js';
import { printableJson } from '../../policy/printable.js';

interface TrustOptions {
  trustedKeys?: string;
  requireSignature?: boolean;
}

/** The caller's trusted-keys file: `--trusted-keys FILE`, else `<state>/trusted-keys`. */
export function trustSettings(o: TrustOptions): TrustSettings {
  const file = o.trustedKeys ?? join(stateDirs().state, 'trusted-keys');
  if (o.trustedKeys !== undefined && !existsSync(file))
    throw new UsageError(`--trusted-keys ${file}: no such file`);
  const trusted = readTrustedKeys(file);
  return {
    trusted,
    requireSigned: Boolean(o.requireSignature) || trusted.length > 0,
    exempt: (digest) => isBuiltinDigest(digest),
    carapaceVersion: carapaceVersion(),
  };
}

export function blueprintStore(): BlueprintStore {
  return new BlueprintStore(stateDirs().state);
}

function isDir(ref: string): boolean {
  return ref.includes('/') || ref.startsWith('.');
}

function installedRef(ref: string, store: BlueprintStore, trust: TrustSettings): VerifiedBlueprint {
  const found = store.find(ref, trust);
  if (found.length === 0)
    throw new UsageError(`no installed blueprint "${ref}" (carapace blueprint list shows them)`, 3);
  if (found.length > 1 && ref.startsWith('sha256:'))
    throw new UsageError(`"${ref}" names ${found.length} blueprints; give more of the digest`);
  return found[0]!;
}

function describe(v: VerifiedBlueprint): string {
  const b = v.blueprint;
  // Signatures by keys the caller does not trust are named as such, not hidden as "unsigned".
  const signed =
    v.signatures.trustedBy.length > 0
      ? `signed by ${v.signatures.trustedBy.join(', ')}`
      : isBuiltinDigest(v.digest)
        ? 'built-in'
        : v.signatures.unknown.length > 0
          ? `signed by ${v.signatures.unknown.join(', ')}, not a trusted key`
          : 'unsigned';
  return `${b.name} ${b.version} ${v.digest} (${signed})`;
}

const trustOptions = (c: Command) =>
  c
    .option('--trusted-keys <file>', 'trusted public keys (default: <state>/trusted-keys)')
    .option(
      '--require-signature',
      'refuse a blueprint no trusted key signed (the default when any key is trusted)',
    );

export function registerBlueprint(program: Command): void {
  const bp = program
    .command('blueprint')
    .description('agent blueprints: verify, install, list, show, remove; keygen and sign to publish one');

  bp.command('keygen')
    .description('make an ed25519 key pair for signing blueprints: NAME.key (private, 0600) and NAME.pub')
    .option('--out <dir>', 'where to write the two files', '.')
    .option('--name <name>', 'file name and comment of the key', 'blueprint-signing')
    .action((o: { out: string; name: string }) => {
      if (!/^[A-Za-z0-9_.-]+$/.test(o.name))
        throw new UsageError(`--name ${o.name}: letters, digits, ".", "_" and "-" only`);
      const key = join(resolve(o.out), `${o.name}.key`);
      const pub = join(resolve(o.out), `${o.name}.pub`);
      if (existsSync(key))
        throw new UsageError(`${key} exists; keygen never overwrites a key (choose another --name)`);
      const made = generateSigningKey(o.name);
      writeFileSync(key, made.privatePem, { mode: 0o600, flag: 'wx' });
      writeFileSync(pub, made.publicLine, { mode: 0o644 });
      process.stdout.write(
        `key ${made.id}: private key ${key}, public key ${pub}\n` +
          `to trust it: append ${pub} to the trusted-keys file of whoever installs your blueprints\n`,
      );
    });

  bp.command('sign')
    .description(
      `record DIR's digest in ${DIGEST_FILE} (publish it); with --key, add an ed25519 signature too`,
    )
    .argument('<dir>', 'the blueprint directory')
    .option('--key <file>', 'the private key (carapace blueprint keygen)')
    .action((dir: string, o: { key?: string }) => {
      loadBlueprintManifest(dir); // a blueprint that would not install is not published
      const digest = computeDigest(dir);
      writeFileSync(join(dir, DIGEST_FILE), `${digest}\n`);
      let line = '';
      if (o.key !== undefined) {
        let pem: string;
        try {
          pem = readFileSync(o.key, 'utf8');
        } catch {
          throw new UsageError(`--key ${o.key}: cannot read the key file`);
        }
        line = signDigest(digest, pem, o.key);
        const id = line.split(' ')[1]!;
        const sigFile = join(dir, SIGNATURE_FILE);
        // Signatures over an older digest are void; one per key over this one.
        const kept = existsSync(sigFile)
          ? readFileSync(sigFile, 'utf8')
              .split('\n')
              .filter((l) => l.trim() !== '' && l.split(/\s+/)[1] !== id)
          : [];
        writeFileSync(sigFile, [...kept, line.trimEnd()].join('\n') + '\n');
      }
      process.stdout.write(`${digest}${line !== '' ? ` signed by ${line.split(' ')[1]}` : ''}\n`);
    });

  trustOptions(
    bp
      .command('verify')
      .description(
        'check a blueprint (a directory, or an installed name or digest): digest, signatures, manifest',
      )
      .argument('<blueprint>', 'DIR, NAME or sha256:…'),
  ).action((ref: string, o: TrustOptions) => {
    const trust = trustSettings(o);
    const v = isDir(ref) ? verifyBlueprint(ref, trust) : installedRef(ref, blueprintStore(), trust);
    process.stdout.write(`ok: ${describe(v)}\n`);
  });

  trustOptions(
    bp
      .command('install')
      .description('verify a blueprint and install it (immutable, stored by its digest)')
      .argument('<blueprint>', `DIR, or the name of a built-in one (${builtinBlueprintNames().join(', ')})`),
  ).action((ref: string, o: TrustOptions) => {
    const { blueprint, installedNow } = resolveBlueprint(ref, blueprintStore(), trustSettings(o));
    process.stdout.write(`${installedNow ? 'installed' : 'already installed'}: ${describe(blueprint)}\n`);
  });

  outputOption(trustOptions(bp.command('list').description('installed blueprints, and the built-in ones')), [
    'table',
    'json',
  ]).action((o: TrustOptions & { output: 'table' | 'json' }) => {
    const store = blueprintStore();
    const images = new ImageStore(stateDirs().state);
    const trust = trustSettings(o);
    const rows: { name: string; version: string; digest: string; status: string; image: boolean }[] = [];
    for (const digest of store.digests()) {
      try {
        const builtin = isBuiltinDigest(digest);
        const v = store.open(digest, trust);
        const signed = v.signatures.trustedBy.length > 0 ? 'signed' : builtin ? 'built-in' : 'unsigned';
        rows.push({
          name: v.blueprint.name,
          version: v.blueprint.version,
          digest,
          status: signed,
          image: images.installed(v, ownArch()),
        });
      } catch (err) {
        rows.push({
          name: store.peekName(digest) ?? '?',
          version: '?',
          digest,
          status: `REFUSED: ${(err as Error).message.split('\n')[0]}`,
          image: false,
        });
      }
    }
    if (o.output === 'json') {
      process.stdout.write(printableJson(rows, 2) + '\n');
      return;
    }
    const installedNames = new Set(rows.map((r) => r.name));
    const available = builtinBlueprintNames().filter((n) => !installedNames.has(n));
    // A refusal's reason is a sentence with paths and two digests: on its own line, not in a cell.
    const refused = (r: (typeof rows)[number]) => r.status.startsWith('REFUSED: ');
    process.stdout.write(
      table(
        ['NAME', 'VERSION', 'DIGEST', 'STATUS', 'IMAGE'],
        rows.map((r) => [
          r.name,
          r.version,
          r.digest.slice(0, 19),
          refused(r) ? 'REFUSED' : r.status,
          r.image ? 'built' : '-',
        ]),
      ),
    );
    for (const r of rows.filter(refused)) say(`${r.name} ${r.digest}: ${r.status.slice('REFUSED: '.length)}`);
    if (available.length > 0) process.stdout.write(`built-in, not installed yet: ${available.join(', ')}\n`);
  });

  trustOptions(
    bp
      .command('show')
      .description('one blueprint: what it installs, runs and allows')
      .argument('<blueprint>', 'NAME, sha256:… or DIR'),
  ).action((ref: string, o: TrustOptions) => {
    const trust = trustSettings(o);
    const builtin = join(builtinBlueprintsDir(), ref);
    const v = isDir(ref)
      ? verifyBlueprint(ref, trust)
      : existsSync(join(builtin, 'blueprint.yaml')) && blueprintStore().find(ref, trust).length === 0
        ? verifyBlueprint(builtin, trust)
        : installedRef(ref, blueprintStore(), trust);
    const b = v.blueprint;
    const lines = [
      `${b.name} ${b.version}: ${b.description}`,
      `digest:     ${v.digest}`,
      `signatures: ${v.signatures.trustedBy.length > 0 ? `trusted ${v.signatures.trustedBy.join(', ')}` : 'none trusted'}${v.signatures.unknown.length > 0 ? `; unknown keys ${v.signatures.unknown.join(', ')}` : ''}`,
      `needs:      Carapace ${b.min_carapace_version} or newer`,
      `runtime:    ${b.agent.runtime?.node !== undefined ? `Node.js ${b.agent.runtime.node.version}` : 'the host system'}`,
      `packages:   ${b.agent.packages.map((p) => `${p.name}@${p.version}`).join(', ') || 'none'}`,
      `command:    ${b.agent.command.join(' ')}`,
      `policy:     ${b.policy.base ?? 'the default policy'}${b.policy.presets.length > 0 ? ` + presets ${b.policy.presets.join(', ')}` : ''}`,
      `inference:  ${b.inference !== undefined ? `${b.inference.protocol}${b.inference.model !== undefined ? `, model ${b.inference.model}` : ''}` : 'none'}`,
      `forward:    ${b.forward.join(', ') || 'none'}`,
      `health:     ${b.health?.url ?? b.health?.command?.join(' ') ?? 'the agent running'}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  });

  trustOptions(
    bp
      .command('remove')
      .description(
        'remove an installed blueprint and its agent image, unless another blueprint shares it (refused while a sandbox uses it)',
      )
      .argument('<blueprint>', 'NAME or sha256:…'),
  ).action(async (ref: string, o: TrustOptions) => {
    const store = blueprintStore();
    const digests = ref.startsWith('sha256:')
      ? store.digests().filter((d) => d.startsWith(ref))
      : store.digests().filter((d) => store.peekName(d) === ref);
    if (digests.length === 0)
      throw new UsageError(`no installed blueprint "${ref}" (carapace blueprint list shows them)`, 3);
    if (digests.length > 1 && ref.startsWith('sha256:'))
      throw new UsageError(`"${ref}" names ${digests.length} blueprints; give more of the digest`);
    void o;
    // A sandbox made from it binds its agent image read-only: removing the image under it would
    // break the running agent (and its next start), so the sandbox goes first.
    // Own gateway with no database yet: no sandbox was ever made here, and none needs starting.
    const { GatewayClient, gatewayEndpoint } = await import('../gateway/gateway-client.js');
    const endpoint = gatewayEndpoint();
    const sandboxes =
      !endpoint.own || existsSync(join(endpoint.dirs.state, 'gateway.db'))
        ? await (
            await GatewayClient.connect()
          ).call<{ name: string; labels: Record<string, string> }[]>('GET', '/v1/sandboxes')
        : [];
    for (const d of digests) {
      const users = sandboxes.filter((s) => s.labels['carapace.blueprint.digest'] === d).map((s) => s.name);
      if (users.length > 0)
        throw new UsageError(
          `blueprint ${store.peekName(d) ?? ref} ${d} is in use by sandbox ${users.join(', ')}; ` +
            `carapace sandbox delete ${users.join(' ')} first`,
          1,
        );
    }
    // An image is shared by every blueprint with the same pins (imageId): it goes with the last.
    const images = new ImageStore(stateDirs().state);
    const idOf = (d: string) => {
      const b = store.peek(d);
      return b === null ? null : imageId(b, ownArch());
    };
    const kept = new Set(
      store
        .digests()
        .filter((d) => !digests.includes(d))
        .map(idOf),
    );
    for (const d of digests) {
      const id = idOf(d);
      if (id !== null && !kept.has(id)) images.remove(id);
      images.removeLegacy(d);
      store.remove(d);
      process.stdout.write(`removed ${ref.startsWith('sha256:') ? '' : `${ref} `}${d}\n`);
    }
  });
}
