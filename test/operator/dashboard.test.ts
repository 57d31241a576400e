/**
 * Operator in the loop, part 4: the web dashboard, in real headless Chromium (Debian's package,
 * driven by playwright-core) against a real gateway whose sandbox's agent makes real requests.
 * Acceptance: it loads (sandboxes, forwarded ports as links, chart), a new denial appears live as
 * a decision and a proposal, approving it from the page lets the same request pass, and nothing is
 * served without the token. The screenshot it takes is docs/screenshots/dashboard.png under
 * `npm run screenshots`, and a file of the test's own otherwise: a test run leaves the tree as it
 * found it (the picture has the time, ports and chart of its run).
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, removedAfterFile } from '../helpers/cli.js';
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
  let suggest: (host: string, rationale: string) => Promise<string>;

  beforeAll(async () => {
    ({ gw, up, ask, url, suggest } = await requestScene({
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
    // Nothing the page asks for is refused (a browser asks for /favicon.ico, without the token).
    const errors: string[] = [];
    page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
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
    const shot =
      process.env.CARAPACE_SCREENSHOTS === '1'
        ? join(REPO, 'docs', 'screenshots', 'dashboard.png')
        : join(removedAfterFile(mkdtempSync(join(tmpdir(), 'carapace-dashboard-'))), 'dashboard.png');
    await page.screenshot({ path: shot });
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe('PNG');

    await page.click('#proposals button.approve');
    await page.waitForSelector('#proposals tr[data-proposal]', { state: 'detached' });
    expect(await page.textContent('#status')).toMatch(/approved \(policy revision 2\)/);
    expect(await ask(url('b.test'))).toBe('200');
    expect(errors).toEqual([]);
    await page.close();
  });

  it("moves the chart on with the page's clock: old buckets scroll left, a new decision counts at its own time", async () => {
    const page = await browser.newPage();
    await page.clock.install({ time: Date.now() });
    await page.goto(dash.url);
    await page.waitForSelector('body[data-live="1"]');
    const line = '.chart[data-sandbox="web"] polyline[data-series="denials"]';
    await page.waitForSelector(line);
    /** The buckets the denials line is above its baseline in (the chart is 80 high, baseline 76). */
    const buckets = async () =>
      ((await page.getAttribute(line, 'points')) ?? '')
        .split(' ')
        .map((pt, i) => [i, Number(pt.split(',')[1])] as const)
        .filter(([, y]) => y < 76)
        .map(([i]) => i);
    const before = await buckets();
    expect(before.length).toBeGreaterThan(0); // the earlier tests' denials, in the last buckets
    expect(Math.max(...before)).toBeGreaterThanOrEqual(170);

    // A minute on the page's clock: six buckets of 10 s (five when the server's last bucket began
    // between the clock's install and the page's load).
    await page.clock.runFor(60_000);
    const after = await buckets();
    const shift = before[0]! - after[0]!;
    expect([5, 6]).toContain(shift);
    expect(after).toEqual(before.map((i) => i - shift));

    // A denial now (the real time, a minute behind the page's): counted in its own bucket, where
    // the earlier ones moved to, not in the last.
    const legend = '.chart[data-sandbox="web"] .legend';
    const total = async () => Number(/(\d+) denials/.exec((await page.textContent(legend)) ?? '')?.[1]);
    const counted = await total();
    expect(await ask(url('c.test'))).toBe('403');
    for (let i = 0; i < 200 && (await total()) <= counted; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await total()).toBe(counted + 1);
    const now = await buckets();
    expect(Math.max(...now)).toBeLessThanOrEqual(Math.max(...after) + 1);
    expect(Math.max(...now)).toBeLessThan(179);
    await page.close();
  });

  it("marks the agent's own suggestions (policy.local) apart from the denials, with its words as text", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await page.goto(dash.url);
    await page.waitForSelector('body[data-live="1"]');
    expect(await ask(url('d.test'))).toBe('403');
    const rationale = '<b>fixtures</b> live on e.test';
    expect(await suggest('e.test', rationale)).toMatch(/^201 /);
    const byHost = async (host: string) => {
      const row = await page.waitForSelector(`#proposals tr[data-proposal]:has-text("connect ${host}:")`);
      return (await row.$('td:nth-child(3)'))!;
    };
    const denial = await byHost('d.test');
    expect(await denial.$eval('.badge', (b) => [b.className, b.textContent])).toEqual([
      'badge denial',
      'denial',
    ]);
    expect(await denial.$('.rationale')).toBeNull();
    const asked = await byHost('e.test');
    expect(await asked.$eval('.badge', (b) => [b.className, b.textContent])).toEqual([
      'badge agent',
      'agent',
    ]);
    // What the agent wrote is text on the page, never markup.
    expect(await asked.$eval('.rationale', (r) => [r.textContent, r.children.length])).toEqual([
      `the agent says: ${rationale}`,
      0,
    ]);
    expect(await page.textContent('#proposals thead')).toContain('From');
    await page.close();
  });

  it('says how to come back once the gateway has gone (a new address and token)', async () => {
    const page = await browser.newPage();
    await page.goto(dash.url);
    await page.waitForSelector('body[data-live="1"]');
    await gw.stop();
    await page.waitForSelector('body[data-live=""]');
    expect(await page.textContent('#status')).toContain('carapace dashboard prints its new address');
    await page.close();
  });
});
