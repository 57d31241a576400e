/**
 * Operator in the loop, part 4: the web dashboard, in real headless Chromium (Debian's package,
 * driven by playwright-core) against a real gateway whose sandbox's agent makes real requests.
 * Acceptance: it loads (sandboxes, forwarded ports as links, chart), a new denial appears live as
 * a decision and a proposal, approving it from the page lets the same request pass, and nothing is
 * served without the token. The screenshot it takes is docs/screenshots/dashboard.png.
 */
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { requestScene } from '../helpers/gateway-agent.js';
import { cliAs, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import type { Upstreams } from '../proxy/harness.js';

const CHROMIUM = '/usr/bin/chromium';

/** A raw request to the dashboard: status and body. */
function raw(
  port: number,
  path: string,
  opts: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += String(d)));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(!holds('root') || !existsSync(CHROMIUM))('the web dashboard, in headless Chromium', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let browser: Browser;
  let ask: (url: string) => Promise<string>;
  let dash: { url: string; port: number; token: string };
  let url: (host: string) => string;

  beforeAll(async () => {
    ({ gw, up, ask, url } = await requestScene({
      forwards: [{ hostPort: 20000 + (process.pid % 20000), sandboxPort: 8080 }],
    }));
    expect(await ask(url('a.test'))).toBe('200');
    const r = cliAs(gw.home, ['dashboard', '-o', 'json']);
    expect(r.stderr).toBe('');
    dash = JSON.parse(r.stdout) as typeof dash;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
    await gw?.stop();
    await up?.close();
  });

  it('refuses every request without the token, with a wrong one, a token in a POST query, or another Host', async () => {
    expect(dash.url).toBe(`http://127.0.0.1:${dash.port}/?token=${dash.token}`);
    expect(dash.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const path of ['/', '/api/sandboxes', '/api/proposals', '/api/events', '/api/series']) {
      const r = await raw(dash.port, path);
      expect(r.status).toBe(401);
      expect(r.body).not.toContain('web');
    }
    expect((await raw(dash.port, `/api/sandboxes?token=${dash.token.slice(0, -1)}x`)).status).toBe(401);
    expect(
      (await raw(dash.port, `/api/proposals/1/approve?token=${dash.token}`, { method: 'POST' })).status,
    ).toBe(401);
    expect(
      (
        await raw(dash.port, '/api/sandboxes', {
          headers: { Authorization: `Bearer ${dash.token}`, Host: 'evil.example:80' },
        })
      ).status,
    ).toBe(421);
    const ok = await raw(dash.port, '/api/sandboxes', { headers: { Authorization: `Bearer ${dash.token}` } });
    expect(ok.status).toBe(200);
    // In the browser too: the page without its token is a refusal.
    const page = await browser.newPage();
    const res = await page.goto(`http://127.0.0.1:${dash.port}/`);
    expect(res?.status()).toBe(401);
    expect(await page.textContent('body')).toContain('a dashboard token is needed');
    await page.close();
  });

  it('loads, updates live on a new denial, and approves it from the page', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await page.goto(dash.url);
    await page.waitForSelector('body[data-live="1"]');
    expect(page.url()).toBe(`http://127.0.0.1:${dash.port}/`); // the token left the address bar
    await page.waitForSelector('#sandboxes tr[data-sandbox="web"]');
    const link = await page.getAttribute('#sandboxes tr[data-sandbox="web"] a', 'href');
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    // CPU (a share of one core between two readings, the second a second later) and memory.
    const cell = (n: number) => `#sandboxes tr[data-sandbox="web"] td:nth-child(${n})`;
    for (let i = 0; i < 100 && !/^\d+%$/.test((await page.textContent(cell(4))) ?? ''); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await page.textContent(cell(4))).toMatch(/^\d+%$/);
    expect(await page.textContent(cell(5))).toMatch(/^\d+(\.\d)?[KMG]$/);
    await page.waitForSelector('.chart[data-sandbox="web"] polyline[data-series="requests"]');

    // A new denial: pushed to the open page as a decision and a proposal.
    expect(await ask(url('b.test'))).toBe('403');
    await page.waitForSelector('.decision.denied');
    expect(await page.textContent('.decision.denied')).toContain(`connect b.test:${up.httpPort}`);
    const row = await page.waitForSelector('#proposals tr[data-proposal]');
    expect(await row.textContent()).toContain(`connect b.test:${up.httpPort}`);
    expect(await page.textContent('.chart[data-sandbox="web"] .legend')).toMatch(/[1-9]\d* denials/);
    await page.screenshot({ path: join(REPO, 'docs', 'screenshots', 'dashboard.png') });

    await page.click('#proposals button.approve');
    await page.waitForSelector('#proposals tr[data-proposal]', { state: 'detached' });
    expect(await page.textContent('#status')).toMatch(/approved \(policy revision 2\)/);
    expect(await ask(url('b.test'))).toBe('200');
    await page.close();
  });
});
