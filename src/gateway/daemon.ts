/**
 * The gateway daemon (`carapace gateway run`): its state (SQLite), its runtime (one proxy, the
 * sandboxes), its API on Unix sockets, and its own log (JSON lines on stdout). One per run
 * directory: a second one refuses to start while the first lives.
 *
 * As root it is the system gateway: every sandbox gets its own host uid and cgroups, users reach
 * it through their own sockets (api/sockets.ts). As a normal user it is that user's rootless
 * gateway. Configuration comes in (the CLI reads the environment), nothing here reads it.
 */
import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BubblewrapDriver } from '../runtime/bubblewrap-driver.js';
import { defaultPolicyPath } from '../runtime/one-off-run.js';
import { Runtime, type ProxySettings } from '../runtime/runtime.js';
import { hostIdentities } from '../sandbox/identity/identity.js';
import type { StateDirs } from '../sandbox/state-dirs.js';
import type { AuditRotation } from '../audit/index.js';
import { sweepDeadRuns } from '../sandbox/sweep.js';
import { OneOffRuns, RUNS_AUDIT_ID } from './sandboxes/one-off-runs.js';
import { runRoutes } from './run-routes.js';
import { ApiServer } from './api/server.js';
import { GatewaySockets } from './api/sockets.js';
import { AuditRouter } from './audit-router.js';
import type { LogRotation } from './sandboxes/agent-log.js';
import { LogService } from './sandboxes/log-service.js';
import { GatewayMetrics } from './metrics.js';
import { PolicyService } from './policy/policy-service.js';
import { gatewayRoutes } from './routes.js';
import { releasePidFile, takePidFile } from './pid-file.js';
import { readExits, resumeSandboxes } from './sandboxes/resume.js';
import { SandboxLauncher } from './sandboxes/sandbox-launcher.js';
import { SandboxService } from './sandboxes/sandbox-service.js';
import { DEFAULT_QUOTAS, UserQuotas, type Quotas } from './sandboxes/quotas.js';
import type { RestartSettings } from './sandboxes/restart-policy.js';
import { Database } from './store/database.js';
import { PolicyRevisionStore } from './store/policy-revisions.js';
import { SandboxStore } from './store/sandbox-store.js';
import { SecretBox } from './store/secret-box.js';
import { sharedUpstreamTrust } from '../proxy/index.js';
import { InferenceRouter } from '../router/index.js';
import { InferenceService } from './inference/inference-service.js';
import { ProviderService } from './inference/provider-service.js';
import { providerRoutes } from './inference/provider-routes.js';
import { ProviderStore } from './store/provider-store.js';
import { SqliteUsageStore } from './store/usage-store.js';
import { ProposalService } from './proposals/proposals.js';
import { proposalRoutes } from './proposals/proposal-routes.js';
import { ProposalStore } from './store/proposal-store.js';
import { PolicyLocal } from './proposals/policy-local.js';
import { OperatorEvents } from './operator-events.js';
import { operatorRoutes } from './operator-routes.js';
import { Dashboard } from './dashboard/server.js';

export { GatewayError } from './pid-file.js';

export interface GatewayConfig {
  dirs: StateDirs;
  version: string;
  uidBase?: number | undefined;
  quotas?: Quotas | undefined;
  restart?: RestartSettings | undefined;
  /**
   * The operator's settings of the egress proxy every sandbox shares: hosts map, trusted host-local
   * upstreams, extra upstream CAs (as `carapace run --resolve/--allow-local/--upstream-ca`).
   */
  proxy?: ProxySettings | undefined;
  /** Size and number of each sandbox's audit files (default 16 MiB × 4: src/audit/audit-files.ts). */
  audit?: AuditRotation | undefined;
  /** Size and number of each sandbox's agent log files (default 16 MiB × 2: sandboxes/agent-log.ts). */
  logs?: LogRotation | undefined;
  /** The options it was given, as typed (`gateway status` shows them). */
  options?: readonly string[] | undefined;
  /** Where the gateway's own log lines go (JSON objects, one per line). */
  log?: (entry: Record<string, unknown>) => void;
}

export class Gateway {
  private constructor(
    private readonly parts: {
      sockets: GatewaySockets;
      server: ApiServer;
      runtime: Runtime;
      launcher: SandboxLauncher;
      store: SandboxStore;
      db: Database;
      audit: AuditRouter;
      metrics: GatewayMetrics;
      pidFile: string;
      router: InferenceRouter;
      proposals: ProposalService;
      events: OperatorEvents;
      dashboard: Dashboard;
      runs: OneOffRuns;
    },
    readonly socket: string,
    private readonly log: (entry: Record<string, unknown>) => void,
  ) {}

  static async start(cfg: GatewayConfig): Promise<Gateway> {
    const log =
      cfg.log ?? ((e) => process.stdout.write(JSON.stringify({ t: new Date().toISOString(), ...e }) + '\n'));
    const rootless = (process.getuid?.() ?? 0) !== 0;
    const { dirs } = cfg;
    // Sandbox uids traverse these to their own directories below; they cannot list them.
    for (const d of [dirs.state, dirs.run]) {
      mkdirSync(d, { recursive: true, mode: 0o711 });
      chmodSync(d, 0o711);
    }
    const pidFile = takePidFile(join(dirs.run, 'gateway.pid'));
    try {
      const identities = hostIdentities(cfg.uidBase);
      const db = new Database(join(dirs.state, 'gateway.db'));
      const store = new SandboxStore(db);
      // How sandboxes that ended while no gateway held them ended: read before the sweep below
      // removes what their runs left (their exit.json with it).
      const exits = readExits(
        store.list().map((r) => r.id),
        dirs.run,
      );
      const lost = await sweepDeadRuns(dirs, identities);
      for (const l of lost) {
        if (!store.get(l.record.name))
          log({ level: 'warn', msg: 'swept what a dead run left', sandbox: l.record.name, left: l.left });
      }
      const secrets = SecretBox.open(join(dirs.state, 'secret.key'));
      const audit = new AuditRouter(join(dirs.state, 'audit'), { rotation: cfg.audit });
      // inference.local for every sandbox: the router reads each sandbox's routes from its policy,
      // its owner's providers and its credentials from this store, and keeps usage here.
      // Providers' TLS trusts what the proxy's upstream TLS does: one context for both.
      const upstreamTrust = () => sharedUpstreamTrust(cfg.proxy?.upstreamCaFile).context;
      const providers = new ProviderService({
        providers: new ProviderStore(db, secrets),
        sandboxes: store,
        secrets,
        upstreamTrust,
        log,
      });
      const usage = new SqliteUsageStore(db);
      const router = new InferenceRouter({
        audit,
        providers: providers.directory(),
        usage,
        upstreamTrust,
        onError: (err, sandbox) =>
          log({
            level: 'error',
            msg: 'inference router error',
            sandbox,
            error: err instanceof Error ? err.message : String(err),
          }),
      });
      // policy.local: the agent's policy advisor (off unless its policy enables it), answered by
      // the proposals made below.
      const advisor = new PolicyLocal();
      const runtime = new Runtime({
        driver: new BubblewrapDriver({ dirs, identities }),
        audit,
        proxy: cfg.proxy,
        internalHosts: [router.internalHost, advisor.internalHost],
      });
      // Operator settings are checked now (a bad --allow-local), not at the first sandbox's start.
      if (cfg.proxy && (cfg.proxy.allowLocal.length > 0 || cfg.proxy.upstreamCaFile !== undefined)) {
        await runtime.proxy();
      }
      const launcher = new SandboxLauncher({
        runtime,
        store,
        audit,
        secrets,
        dirs,
        identities,
        rootless,
        restart: cfg.restart,
        logRotation: cfg.logs,
        log,
      });
      // One account per user, of the sandboxes they create and of their runs' (quotas.ts).
      const quotas = new UserQuotas(store, cfg.quotas ?? DEFAULT_QUOTAS);
      const sandboxes = new SandboxService({
        store,
        launcher,
        audit,
        secrets,
        dirs,
        identities,
        defaultPolicy: readFileSync(defaultPolicyPath(), 'utf8'),
        quotas,
      });
      // `carapace run` through this gateway: a sandbox waiting for each owner's next run. Their
      // events share one audit file, runs.jsonl (one per run would pile up files and fds).
      const runsAudit = audit.forSandbox(RUNS_AUDIT_ID);
      const runs = new OneOffRuns({ runtime, dirs, audit: runsAudit, quotas, log });
      const logs = new LogService(launcher.logs, audit);
      const server = new ApiServer([], {
        onInternalError: (err, req) =>
          log({
            level: 'error',
            msg: 'internal error',
            method: req.method,
            url: req.url,
            error: err instanceof Error ? err.stack : String(err),
          }),
        // What changed and who asked, and every failure; reads that succeed (list, logs, a
        // scraper's /metrics every few seconds) are not worth a line each.
        onResponse: (r) => {
          if (r.method !== 'GET' || r.status >= 400)
            log({ level: r.status >= 500 ? 'error' : 'info', msg: 'api request', ...r });
        },
      });
      const sockets = new GatewaySockets({
        runDir: dirs.run,
        rootless,
        onConnection: (s, caller) => server.accept(s, caller),
        // Called from start() on, once the dashboard below exists.
        onMembers: (users) => dashboard.keepMembers(users),
      });
      const info = {
        version: cfg.version,
        pid: process.pid,
        startedAt: Date.now(),
        socket: sockets.mainPath,
        rootless,
        options: [...(cfg.options ?? [])],
      };
      const policies = new PolicyService({
        sandboxes,
        revisions: new PolicyRevisionStore(db, store),
        launcher,
        runtime,
        audit,
        log,
      });
      // Denials become proposals as the audit stream carries them (docs/operator.md).
      const proposals = new ProposalService({
        proposals: new ProposalStore(db),
        store,
        revisions: new PolicyRevisionStore(db, store),
        policies,
        audit,
        log,
      });
      await proposals.start();
      advisor.bind({ proposals, revisions: new PolicyRevisionStore(db, store), store });
      const events = new OperatorEvents({ audit, proposals, store });
      const dashboard = new Dashboard({ sandboxes, launcher, proposals, events, log });
      const metrics = new GatewayMetrics({
        store,
        launcher,
        version: cfg.version,
        startedAt: info.startedAt,
      });
      const inference = new InferenceService({
        sandboxes,
        store,
        launcher,
        providers,
        usage,
        router,
        policies,
        upstreamTrust,
      });
      server.setRoutes(
        gatewayRoutes({
          sandboxes,
          logs,
          policies,
          metrics,
          audit,
          info,
          extra: [
            ...providerRoutes({ providers, inference }),
            ...proposalRoutes(proposals),
            ...operatorRoutes(events, dashboard),
            ...runRoutes(runs, runsAudit),
          ],
        }),
      );
      const gateway = new Gateway(
        {
          sockets,
          server,
          runtime,
          launcher,
          store,
          db,
          audit,
          metrics,
          pidFile,
          router,
          proposals,
          events,
          dashboard,
          runs,
        },
        sockets.mainPath,
        log,
      );
      await resumeSandboxes({ store, launcher, exits, log });
      await sockets.start();
      log({
        level: 'info',
        msg: 'gateway listening',
        socket: sockets.mainPath,
        pid: process.pid,
        version: cfg.version,
        rootless,
      });
      return gateway;
    } catch (err) {
      releasePidFile(pidFile);
      throw err;
    }
  }

  /**
   * Stops listening and lets the sandboxes be: they run on, and the next gateway re-adopts them.
   * Their proxy sockets close meanwhile (their connections fail until it is back).
   */
  async close(): Promise<void> {
    const {
      sockets,
      server,
      runtime,
      launcher,
      db,
      audit,
      metrics,
      pidFile,
      router,
      proposals,
      events,
      dashboard,
      runs,
    } = this.parts;
    // Live streams first: the API sockets wait for their connections to end. A run's sandbox
    // would die with this process; it goes now, and its connection with it.
    await runs.close();
    events.close();
    await dashboard.close();
    await sockets.close();
    await server.close();
    proposals.close();
    metrics.close();
    await launcher.letGo();
    await runtime.close();
    await router.close(); // writes the usage it holds
    await audit.dropsCounted(); // a dropped generation's event is written before the files close
    audit.close();
    db.close();
    releasePidFile(pidFile);
    this.log({ level: 'info', msg: 'gateway stopped' });
  }
}
