/**
 * onboard's last step: waiting until the agent is healthy, by the blueprint's check — a URL asked
 * through the sandbox's forward on the host's loopback (or, without a forward, with curl inside),
 * or a command run inside — while watching that the sandbox has not failed.
 */
import { request } from 'node:http';
import { resolveInImage } from '../../blueprint/sandbox-plan.js';
import type { AgentImage } from '../../blueprint/image.js';
import type { VerifiedBlueprint } from '../../blueprint/store.js';
import { execOver } from '../../sandbox/control/control-exec.js';
import { GatewayError, type GatewayClient } from '../gateway/gateway-client.js';
import type { SandboxView, StepContext } from './onboard-steps.js';

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function execStatus(client: GatewayClient, name: string, argv: string[]): Promise<number> {
  try {
    const socket = await client.upgrade(`/v1/sandboxes/${encodeURIComponent(name)}/exec`);
    const proc = execOver(socket, { argv, env: {}, tty: false }, `sandbox ${name}`);
    proc.stdin.end();
    proc.stdout.resume();
    proc.stderr.resume();
    return await proc.exited;
  } catch {
    return -1;
  }
}

/** Waits until the blueprint's health check passes (or the sandbox fails, or the time is up). */
export async function healthStep(
  client: GatewayClient,
  ctx: StepContext,
  v: VerifiedBlueprint,
  image: AgentImage,
  sandbox: SandboxView,
): Promise<void> {
  const health = v.blueprint.health;
  const deadline = Date.now() + (health?.timeout ?? 60) * 1000;
  const url = health?.url !== undefined ? new URL(health.url) : null;
  const forward = url === null ? undefined : sandbox.forwards.find((f) => f.sandboxPort === Number(url.port));
  ctx.say(
    // The URL as it is asked: through the forward, at the host's port (18789 may be taken there).
    `waiting for ${sandbox.name} to be healthy (${url !== null && forward !== undefined ? `http://127.0.0.1:${forward.hostPort}${url.pathname}${url.search}` : (health?.url ?? health?.command?.join(' ') ?? 'running')})`,
  );
  for (;;) {
    const now = await client.call<SandboxView>('GET', `/v1/sandboxes/${encodeURIComponent(sandbox.name)}`);
    if (now.state === 'failed')
      throw new GatewayError(
        'SANDBOX_FAILED',
        `sandbox ${sandbox.name} failed: ${now.reason ?? 'see carapace sandbox logs ' + sandbox.name}`,
        500,
      );
    let ok = now.state === 'running';
    if (ok && url !== null) {
      const status =
        forward !== undefined
          ? await httpStatus(forward.hostPort, url.pathname + url.search)
          : (await execStatus(client, sandbox.name, ['curl', '-sf', '-o', '/dev/null', url.href])) === 0
            ? 200
            : 0;
      ok = status > 0 && status < 500;
    } else if (ok && health?.command !== undefined) {
      // A bare name the image has is the image's, as for the agent's own command.
      ok = (await execStatus(client, sandbox.name, resolveInImage(health.command, image))) === 0;
    }
    if (ok) return;
    if (Date.now() > deadline)
      throw new GatewayError(
        'HEALTH_TIMEOUT',
        `sandbox ${sandbox.name} is not healthy after ${health?.timeout ?? 60} s; see carapace sandbox logs ${sandbox.name} (rerun carapace onboard --resume to wait again)`,
        504,
      );
    await new Promise((r) => setTimeout(r, 1000));
  }
}
