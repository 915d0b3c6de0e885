// Drives Debian's Chromium (headless, through playwright-core) against the
// portal of a running local stack (deploy/local/run.sh), as a user would:
//   node tests/browser/portal.mjs <gateway URL> <screenshot dir> <scratch dir>
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.
// Run by tests/e2e/test_portal.py, which starts and stops the stack.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [gw, shots, scratch] = process.argv.slice(2);
if (!gw || !shots || !scratch) {
  console.error("usage: portal.mjs <gateway URL> <screenshot dir> <scratch dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const origin = new URL(gw).origin;
const step = (name) => console.log("step: " + name);

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

async function until(what, fn, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("timed out waiting for " + what + " (last: " + JSON.stringify(last) + ")");
}

// A function that fails its first call and echoes afterwards: its call is
// dead-lettered (no retries), and its re-drive succeeds.
async function deployFlaky() {
  const script = join(scratch, "flaky.sh");
  writeFileSync(script, `f=${join(scratch, "flaky.flag")}\nif [ -e "$f" ]; then cat; else touch "$f"; echo first call fails >&2; exit 1; fi\n`);
  const body = JSON.stringify({
    service: "flaky", image: "cfaas/flaky:latest",
    envVars: { fprocess: "sh " + script },
    annotations: { "com.openfaas.retry.attempts": "0" }, labels: {},
  });
  const r = await fetch(gw + "/system/functions", { method: "POST", body, headers: { "Content-Type": "application/json" } });
  check(r.status === 202 || r.status === 200, "deploy flaky: " + r.status + " " + (await r.text()));
  await until("flaky ready", async () => {
    const s = await fetch(gw + "/system/function/flaky");
    return s.ok && (await s.json()).availableReplicas >= 1;
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let failed = null;
const foreign = [];
const consoleErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.on("request", (req) => { if (!req.url().startsWith(origin) && !req.url().startsWith("data:")) foreign.push(req.url()); });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(e.message));

  step("the function list shows the demo functions with replicas and counts");
  await page.goto(gw + "/ui/");
  for (const fn of ["figlet", "echo", "long-task"]) {
    await page.locator(`#functions-rows tr[data-function="${fn}"]`).waitFor({ timeout: 15000 });
  }
  const figletRow = await page.locator('#functions-rows tr[data-function="figlet"] td').allInnerTexts();
  check(/^1 \/ 1$/.test(figletRow[1]), "figlet replicas shown as 1 / 1: " + figletRow[1]);
  check(/^\d+$/.test(figletRow[2]), "an invocation count: " + figletRow[2]);
  await page.screenshot({ path: join(shots, "functions.png"), fullPage: true });

  step("a sync invoke of figlet shows status, duration and output");
  await page.locator('#functions-rows tr[data-function="figlet"] button').click();
  await until("figlet selected", async () => (await page.locator("#inv-function").inputValue()) === "figlet");
  await page.fill("#inv-body", "sync");
  await page.click("#inv-submit");
  await page.locator("#res-status[data-status='200']").waitFor({ timeout: 15000 });
  const syncOut = await page.locator("#res-body").innerText();
  const expectSync = execFileSync("figlet", [], { input: "sync" }).toString();
  check(syncOut.trim() === expectSync.trim(), "sync output is figlet's");
  check(/ms$/.test(await page.locator("#res-duration").innerText()), "a duration");

  step("an async invoke of figlet moves to succeeded and shows its output");
  await page.check("input[name=mode][value=async]");
  await page.fill("#inv-body", "cfaas");
  await page.click("#inv-submit");
  await page.locator("#res-status[data-status='202']").waitFor({ timeout: 15000 });
  const asyncId = (await page.locator("#res-callid").innerText()).trim();
  check(/^[0-9a-f-]{36}$/.test(asyncId), "a call id: " + asyncId);
  await page.locator("#res-state [data-state='succeeded']").waitFor({ timeout: 30000 });
  const expect = execFileSync("figlet", [], { input: "cfaas" }).toString();
  await until("the async output", async () => (await page.locator("#res-body").innerText()).trim() === expect.trim());
  await page.screenshot({ path: join(shots, "invoke-async.png"), fullPage: true });

  step("the calls page lists it as succeeded, without a reload");
  await page.goto(gw + "/ui/#calls");
  await page.locator(`#calls-rows tr[data-call-id="${asyncId}"] [data-state="succeeded"]`).waitFor({ timeout: 15000 });

  step("a delayed call is cancelled from the calls page");
  const delayed = await fetch(gw + "/async-function/figlet", { method: "POST", body: "later", headers: { "X-Delay-Seconds": "600" } });
  check(delayed.status === 202, "delayed call accepted: " + delayed.status);
  const delayedId = delayed.headers.get("X-Call-Id");
  const row = page.locator(`#calls-rows tr[data-call-id="${delayedId}"]`);
  await row.locator('[data-state="scheduled"]').waitFor({ timeout: 15000 });
  await page.screenshot({ path: join(shots, "calls.png"), fullPage: true });
  await row.locator("button.cancel").click();
  await row.locator('[data-state="cancelled"]').waitFor({ timeout: 15000 });
  const rec = await (await fetch(gw + "/async-calls/" + delayedId)).json();
  check(rec.state === "cancelled", "record says cancelled: " + rec.state);
  await page.screenshot({ path: join(shots, "calls-cancelled.png"), fullPage: true });

  step("a dead letter is re-driven from the dead letters page and runs");
  await deployFlaky();
  await page.goto(gw + "/ui/#invoke");
  await until("flaky in the form", async () => (await page.locator("#inv-function option[value=flaky]").count()) === 1 ||
    (await page.reload(), false), 20000);
  await page.selectOption("#inv-function", "flaky");
  await page.check("input[name=mode][value=async]");
  await page.fill("#inv-body", "second time lucky");
  await page.click("#inv-submit");
  await page.locator("#res-status[data-status='202']").waitFor({ timeout: 15000 });
  const flakyId = (await page.locator("#res-callid").innerText()).trim();
  await page.locator("#res-state [data-state='dead-lettered']").waitFor({ timeout: 30000 });
  await page.goto(gw + "/ui/#dead-letters");
  const dl = page.locator(`#dl-rows tr[data-call-id="${flakyId}"]`);
  await until("the dead letter listed", async () => {
    if (await dl.count()) return true;
    await page.click("#dl-refresh");
    return false;
  });
  const reason = await dl.locator("td.reason").innerText();
  check(reason.length > 0, "a reason is shown");
  await page.screenshot({ path: join(shots, "dead-letters.png"), fullPage: true });
  await dl.locator("button.redrive").click();
  await until("the dead letter gone after the re-drive", async () => (await dl.count()) === 0, 15000);
  await page.goto(gw + "/ui/#calls");
  const flakyRow = page.locator(`#calls-rows tr[data-call-id="${flakyId}"]`);
  await flakyRow.locator('[data-state="succeeded"]').waitFor({ timeout: 30000 });
  const after = await (await fetch(gw + "/async-calls/" + flakyId)).json();
  check(after.redriven === 1 && after.status === 200, "re-driven once and succeeded: " + JSON.stringify(after));
  await flakyRow.locator("button", { hasText: "Details" }).click();
  await until("the re-driven call's output", async () => (await page.locator("#detail-output").innerText()).trim() === "second time lucky");
  await page.screenshot({ path: join(shots, "calls-redriven.png"), fullPage: true });

  step("usable on a phone-sized screen");
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  await p2.goto(gw + "/ui/");
  await p2.locator('#functions-rows tr[data-function="figlet"]').waitFor({ timeout: 15000 });
  const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, "no sideways scrolling of the page at 390 px: " + overflow + " px too wide");
  await p2.screenshot({ path: join(shots, "phone-functions.png"), fullPage: true });
  await p2.goto(gw + "/ui/#invoke");
  await p2.locator("#inv-submit").waitFor();
  const box = await p2.locator("#inv-submit").boundingBox();
  check(box && box.x >= 0 && box.x + box.width <= 390, "the invoke button fits the screen");
  await p2.screenshot({ path: join(shots, "phone-invoke.png"), fullPage: true });
  await phone.close();

  step("nothing was loaded from another origin, no script errors");
  check(foreign.length === 0, "requests to other origins: " + foreign.join(", "));
  check(consoleErrors.length === 0, "console errors: " + consoleErrors.join(" | "));
  await context.close();
} catch (e) {
  failed = e;
}
await browser.close();
if (failed) {
  console.error("FAILED: " + (failed.stack || failed.message));
  process.exit(1);
}
console.log("portal: all steps passed; screenshots in " + shots);
