/**
 * `carapace dashboard`: the address of the gateway's web dashboard (127.0.0.1 only) with the
 * caller's token in it, its only key (docs/operator.md, "The web dashboard").
 */
import type { Command } from 'commander';
import { GatewayClient } from '../gateway/gateway-client.js';
import { outputOption } from '../output-option.js';
import { printableJson } from '../../policy/printable.js';

export function registerDashboard(program: Command): void {
  outputOption(
    program
      .command('dashboard')
      .description("print the web dashboard's address (on 127.0.0.1, with your token in it)"),
    ['text', 'json'],
    'json for scripts: url, port, token',
  ).action(async (o: { output: 'text' | 'json' }) => {
    const client = await GatewayClient.connect();
    const d = await client.call<{ url: string; port: number; token: string }>('POST', '/v1/dashboard');
    if (o.output === 'json') return void process.stdout.write(printableJson(d, 2) + '\n');
    process.stdout.write(
      `${d.url}\n` +
        'Open it in a browser on this host (over SSH: ssh -L ' +
        `${d.port}:127.0.0.1:${d.port} HOST). The token in it is its only key: whoever has it acts as you, ` +
        'until the gateway restarts or your membership of the carapace groups changes.\n',
    );
  });
}
