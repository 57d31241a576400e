/**
 * A sandbox's routes, for its owner: what its policy's `inference` section says (with whether each
 * route's provider exists), a new section set live (`carapace inference set`), each route's provider
 * tried (`inference test`), and what it has spent (`inference usage`).
 *
 * Setting routes is a policy change like any other (policy-service.ts): a new revision whose only
 * change is the `inference` section (the rest of the text, comments included, stays as it was),
 * applied live by the apply unit. The router reads routes from the generation in force, so the
 * sandbox's next request uses them, no restart, and no other sandbox is touched.
 */
import { parseDocument } from 'yaml';
import type { Inference } from '../../policy/index.js';
import {
  hourOf,
  probeProvider,
  routeTable,
  type InferenceRouter,
  type ProbeResult,
  type TrustSource,
} from '../../router/index.js';
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import { checkPolicyText } from '../policy-text.js';
import type { PolicyService } from '../policy/policy-service.js';
import type { ProviderService } from './provider-service.js';
import type { SandboxLauncher } from '../sandboxes/sandbox-launcher.js';
import type { SandboxService } from '../sandboxes/sandbox-service.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { Counts, SqliteUsageStore } from '../store/usage-store.js';

export interface RouteView {
  name: string;
  provider: string;
  /** The provider's type: the inline route's, or the stored provider's (null: no such provider). */
  type: string | null;
  baseUrl: string | null;
  model: string;
  local: boolean;
  inline: boolean;
  default: boolean;
}

export interface InferenceView {
  sandbox: string;
  policyRev: number;
  inference: Inference | null;
  routes: RouteView[];
}

export interface UsageView {
  sandbox: string;
  route: string;
  local: boolean;
  hour: Counts;
  day: Counts;
  total: Counts;
}

export interface InferenceServiceOptions {
  sandboxes: SandboxService;
  store: SandboxStore;
  launcher: SandboxLauncher;
  providers: ProviderService;
  usage: SqliteUsageStore;
  router: InferenceRouter;
  policies: PolicyService;
  /** What providers' TLS trusts (the proxy's, as the router has it). */
  upstreamTrust?: TrustSource | undefined;
}

export class InferenceService {
  constructor(private readonly opts: InferenceServiceOptions) {}

  /** The latest revision's text and inference section (what the sandbox runs, or starts with). */
  private async current(
    caller: Caller,
    rec: SandboxRecord,
  ): Promise<{ text: string; rev: number; inference: Inference | null }> {
    const latest = this.opts.policies.get(caller, rec.name, rec.ownerUid);
    const text = latest.text ?? '';
    const policy = await checkPolicyText(text, `${rec.name}.yaml`);
    return { text, rev: latest.rev, inference: policy.inference ?? null };
  }

  async get(caller: Caller, name: string, owner?: number): Promise<InferenceView> {
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const { inference, rev } = await this.current(caller, rec);
    const routes: RouteView[] = [];
    if (inference !== null) {
      const table = routeTable(inference);
      for (const r of table.routes.values()) {
        const stored =
          r.inline === null ? await this.opts.providers.directory().named(rec.id, r.provider) : null;
        routes.push({
          name: r.name,
          provider: r.provider,
          type: r.inline?.type ?? stored?.type ?? null,
          baseUrl: r.inline?.endpoint ?? stored?.baseUrl ?? null,
          model: r.model,
          local: r.local,
          inline: r.inline !== null,
          default: table.defaultRoute === r.name,
        });
      }
    }
    return { sandbox: rec.name, policyRev: rev, inference, routes };
  }

  /** Replaces the sandbox's inference section (null removes it); live when the sandbox runs. */
  async set(
    caller: Caller,
    name: string,
    owner: number | undefined,
    inference: unknown,
  ): Promise<InferenceView> {
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const { text, rev, inference: before } = await this.current(caller, rec);
    if (inference !== null) await this.checkSection(rec, inference, before);
    const doc = parseDocument(text);
    if (inference === null) doc.delete('inference');
    else doc.set('inference', doc.createNode(inference));
    // Invalid routes are refused with every diagnostic; nothing is stored and nothing changes.
    await this.opts.policies.set(caller, name, owner, doc.toString(), {
      baseRev: rev,
      origin: { source: 'inference' },
    });
    return this.get(caller, name, owner);
  }

  /**
   * The new section on its own, before it goes into the policy: a problem is named by its place in
   * the section (`inference.routes.cloud.budget…`), not by a line of a policy revision that is never
   * stored. A route that newly names a stored provider the sandbox's owner does not have is
   * refused: it is almost always a typo, and the sandbox's calls would fail until it is found. (A
   * route kept as it was may name a provider deleted since: changing another route does not
   * require fixing it. A policy written before its providers exist goes in with `policy set`.)
   */
  private async checkSection(
    rec: SandboxRecord,
    inference: unknown,
    before: Inference | null,
  ): Promise<void> {
    const engine = await import('../../policy/index.js');
    let section: Inference;
    try {
      section = engine.validatePolicy({ version: 1, inference }, 'inference').inference!;
    } catch (err) {
      if (!(err instanceof engine.PolicyError)) throw err;
      const [first, ...rest] = err.diagnostics;
      throw new ApiError(
        'POLICY_INVALID',
        `the new inference section of ${rec.name}: ${first!.message}` +
          (rest.length > 0 ? ` (and ${rest.length} more)` : ''),
        err.diagnostics,
      );
    }
    const dir = this.opts.providers.directory();
    for (const [route, r] of Object.entries(section.routes)) {
      if (r.endpoint !== undefined) continue;
      const old = before?.routes[route];
      if (old !== undefined && old.endpoint === undefined && old.provider === r.provider) continue;
      if ((await dir.named(rec.id, r.provider)) === null)
        throw new ApiError(
          'INVALID_INPUT',
          `route ${route}: ${rec.name}'s owner has no provider named "${r.provider}" ` +
            `(carapace provider list; create it first: carapace provider create ${r.provider} --type TYPE …)`,
        );
    }
  }

  /** Tries each route's provider (or one route's) with one minimal request. */
  async test(
    caller: Caller,
    name: string,
    owner: number | undefined,
    only?: string,
  ): Promise<(ProbeResult & { route: string; provider: string })[]> {
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const { inference } = await this.current(caller, rec);
    const table = inference === null ? null : routeTable(inference);
    // No section, nothing to try (the loader refuses `routes: {}`; the size check is a second guard).
    if (table === null || table.routes.size === 0)
      throw new ApiError(
        'INVALID_INPUT',
        `sandbox ${name} has no inference routes (carapace inference set ${name} …)`,
      );
    if (only !== undefined && !table.routes.has(only))
      throw new ApiError(
        'INVALID_INPUT',
        `sandbox ${name} has no route "${only}" (routes: ${[...table.routes.keys()].join(', ')})`,
      );
    const dir = this.opts.providers.directory();
    const out: (ProbeResult & { route: string; provider: string })[] = [];
    for (const r of table.routes.values()) {
      if (only !== undefined && r.name !== only) continue;
      const config =
        r.inline !== null
          ? {
              name: `inline:${r.name}`,
              type: r.inline.type,
              baseUrl: r.inline.endpoint,
              apiKey: r.inline.credential !== null ? dir.credential(rec.id, r.inline.credential) : undefined,
            }
          : await dir.named(rec.id, r.provider);
      if (config === null) {
        out.push({
          route: r.name,
          provider: r.provider,
          ok: false,
          status: null,
          latencyMs: 0,
          models: [],
          error: `no provider named ${r.provider} (carapace provider create ${r.provider} …)`,
        });
        continue;
      }
      out.push({
        route: r.name,
        provider: config.name,
        ...(await probeProvider(config, { upstreamTrust: this.opts.upstreamTrust })),
      });
    }
    return out;
  }

  /** What each of the caller's sandboxes (or one) spent per route: this hour, today, in all. */
  usage(caller: Caller, name: string | undefined, owner: number | undefined, all: boolean): UsageView[] {
    const recs =
      name !== undefined
        ? [this.opts.sandboxes.resolve(caller, name, owner)]
        : this.opts.sandboxes.list(caller, all);
    this.opts.router.flushUsage();
    const now = hourOf(Date.now());
    return recs.flatMap((rec) =>
      this.opts.usage.summary(rec.id, now).map((u) => ({ sandbox: rec.name, ...u })),
    );
  }
}
