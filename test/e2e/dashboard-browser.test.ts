// The dashboard in a real headless browser (Debian's chromium, driven by
// playwright-core) against a real mesh: server, sidecars and agent processes.
// It signs in with a token from `ctl dashboard-token`, sees an agent appear, go
// UNHEALTHY when its process is killed and READY when the sidecar restarts it,
// follows a rollout from stuck to complete, and leaves a screenshot in docs/.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, type Page, chromium } from "playwright-core";
import { afterEach, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml } from "../helpers/mesh-cluster.js";
import { repoRoot } from "../helpers/processes.js";

const chromiumPath = "/usr/bin/chromium";
// The README's screenshot is refreshed on request (AGENTMESH_UPDATE_SCREENSHOT=1); ordinary runs leave the tree clean.
const screenshotPath = process.env.AGENTMESH_UPDATE_SCREENSHOT === "1" ? join(repoRoot, "docs", "dashboard.png") : join(tmpdir(), `agentmesh-dashboard-${process.pid}.png`);
/** Playwright's own waits (they poll the DOM): generous, the machine is shared. */
const uiTimeoutMs = 20_000;

let cluster: MeshCluster | undefined;
let context: BrowserContext | undefined;
let userDataDir: string | undefined;

afterEach(async () => {
  await context?.close();
  context = undefined;
  await cluster?.close();
  cluster = undefined;
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  userDataDir = undefined;
});

async function openBrowser(): Promise<Page> {
  // No browser download: the system's Debian package (.ci/run installs it).
  if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} not found: apt-get install -y chromium`);
  userDataDir = mkdtempSync(join(tmpdir(), "agentmesh-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1440, height: 1000 },
  });
  return context.pages()[0] ?? (await context.newPage());
}

function httpPortOf(mesh: MeshCluster): number {
  const listening = mesh.server.lines.find((line) => line.msg === "listening");
  return Number(listening?.httpPort);
}

describe("web dashboard in headless Chromium (real mesh)", () => {
  it("signs in with a ctl token, shows an agent go UNHEALTHY on kill -9 and READY on restart, and a rollout's progress", async () => {
    // Bound beyond loopback, so the dashboard requires a token (the test still only talks to 127.0.0.1).
    cluster = await MeshCluster.start({ serverArgs: ["--http-host", "0.0.0.0"] });
    const mesh = cluster;
    const base = `http://127.0.0.1:${httpPortOf(mesh)}`;
    const page = await openBrowser();
    const requests: string[] = [];
    const problems: string[] = [];
    page.on("request", (request) => requests.push(request.url()));
    page.on("pageerror", (error) => problems.push(error.message));
    page.on("console", (message) => {
      // The sign-in page's own 401 is expected; anything else the console reports is a bug.
      if (message.type() === "error" && !message.text().includes("401")) problems.push(message.text());
    });

    // Without a token: the page loads and asks for one, showing no data.
    await page.goto(`${base}/dashboard/`);
    await page.locator("#login").waitFor({ state: "visible", timeout: uiTimeoutMs });
    await page.locator("#login-reason", { hasText: "token required" }).waitFor({ timeout: uiTimeoutMs });
    expect(await page.locator("#main").isVisible()).toBe(false);

    const issued = await mesh.ctl("dashboard-token", "--url", `${base}/dashboard/`, "--ttl", "10m");
    expect(issued.stderr).toContain("/admin/operator");
    expect(issued.code).toBe(0);
    const url = issued.stdout.trim();
    expect(url).toMatch(new RegExp(`^${base}/dashboard/#token=[A-Za-z0-9_-]+$`));
    await page.goto(url);
    await page.locator("#main").waitFor({ state: "visible", timeout: uiTimeoutMs });
    await page.locator('#connection[data-status="live"]').waitFor({ timeout: uiTimeoutMs });
    expect(await page.locator("#identity").textContent()).toContain("admin/operator");
    // The token left the address bar for sessionStorage.
    expect(page.url()).toBe(`${base}/dashboard/`);

    // An agent appears, READY.
    const hostA = await mesh.startSidecar({ host: "host-a", capacity: 1 });
    // A 2 s restart backoff keeps the killed instance UNHEALTHY long enough to see.
    const restartPolicy = "{initialBackoff: 2s, maxBackoff: 2s}";
    const applied = await mesh.ctl("apply", "-f", mesh.writeFile("echo-1.yaml", echoDeploymentYaml({ version: "1.0.0", replicas: 1, restartPolicy })));
    expect(applied.code).toBe(0);
    const [ready] = await mesh.waitForReady("echo", 1);
    const instanceId = ready?.instanceId as string;
    const row = (state: string) => page.locator(`#agents tr[data-instance-id="${instanceId}"][data-state="${state}"]`);
    await row("READY").waitFor({ timeout: uiTimeoutMs });
    expect(await row("READY").locator("td").first().textContent()).toBe("echo");

    // The routing view of its capability: the one routable instance takes every pick.
    await page.locator(`#routing tr[data-instance-id="${instanceId}"]`).waitFor({ timeout: uiTimeoutMs });
    expect(await page.locator(`#routing tr[data-instance-id="${instanceId}"] td.share`).textContent()).toContain("100.0%");

    // kill -9: UNHEALTHY at once, READY again once the sidecar restarts it.
    const pid = hostA.agentStates(instanceId).findLast((line) => line.state === "ready")?.pid as number;
    const fromIndex = hostA.process.lines.length;
    process.kill(pid, "SIGKILL");
    await row("UNHEALTHY").waitFor({ timeout: uiTimeoutMs });
    await row("READY").waitFor({ timeout: uiTimeoutMs });
    const restarted = await hostA.waitForAgentState(instanceId, "ready", fromIndex);
    expect(restarted.pid).not.toBe(pid);

    // A new version with no room for the surge instance: the rollout shows as stuck at 0/1...
    const deployment = (selector: string) => page.locator(`#deployments tr[data-deployment="echo"]${selector}`);
    expect((await mesh.ctl("apply", "-f", mesh.writeFile("echo-2.yaml", echoDeploymentYaml({ version: "2.0.0", replicas: 1, restartPolicy })))).code).toBe(0);
    await deployment('[data-phase="progressing"][data-updated="0"]').waitFor({ timeout: uiTimeoutMs });
    expect(await deployment("").locator("td.rollout").textContent()).toContain("0/1 updated · 1 ready · 1.0.0 → 2.0.0");
    // ...and moves on to complete when a second sidecar brings capacity.
    await mesh.startSidecar({ host: "host-b", capacity: 1 });
    await deployment('[data-phase="complete"][data-updated="1"][data-version="2.0.0"]').waitFor({ timeout: 60_000 });
    expect(await deployment("").locator("td.rollout").textContent()).toContain("1/1 updated · 1 ready · 1.0.0 → 2.0.0");
    const [updated] = await mesh.waitForReady("echo", 1, { exclusive: true, timeoutMs: 30_000 });
    await page.locator(`#agents tr[data-instance-id="${updated?.instanceId}"][data-state="READY"]`).waitFor({ timeout: uiTimeoutMs });
    expect(await page.locator(`#agents tr[data-instance-id="${updated?.instanceId}"] td`).nth(1).textContent()).toBe("2.0.0");

    // The audit tail shows the refused and the granted sign-in, and both applies.
    for (const action of ["dashboard.denied", "dashboard.open"]) await page.locator(`#audit tr[data-action="${action}"]`).waitFor({ timeout: uiTimeoutMs });
    await page.locator('#audit tr[data-action="deployment.apply"]').nth(1).waitFor({ timeout: uiTimeoutMs });

    await page.screenshot({ path: screenshotPath, fullPage: true });
    expect(problems).toEqual([]);
    // Every request the page made went to this server: nothing from the internet.
    expect(requests.filter((requested) => !requested.startsWith(`${base}/`))).toEqual([]);
  }, 180_000);
});
