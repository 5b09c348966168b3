// GitHub Action entry point for `builder build` (see ../action.yml). No npm dependencies:
// inputs come from INPUT_* variables, outputs go to $GITHUB_OUTPUT and the job summary to
// $GITHUB_STEP_SUMMARY, as the runner expects of a JavaScript action.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

function input(name) {
  return (process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '').trim();
}

function boolInput(name) {
  const v = input(name).toLowerCase();
  if (v === '' || v === 'false') return false;
  if (v === 'true') return true;
  throw new Error(`input ${name}: ${JSON.stringify(v)} is not true or false`);
}

// One item per line; `comma` also splits on commas (tags, platforms), as build-push-action.
function listInput(name, comma = false) {
  return input(name)
    .split(comma ? /[\n,]/ : /\n/)
    .map((s) => s.trim())
    .filter((s) => s && !s.startsWith('#'));
}

function warning(msg) {
  process.stdout.write(`::warning::${msg}\n`);
}

function appendFileVar(variable, text) {
  const file = process.env[variable];
  if (file) fs.appendFileSync(file, text);
}

// `name<<DELIM` blocks, so values may span lines (metadata JSON).
function setOutput(name, value) {
  const delim = `ghadelimiter_${process.pid}_${Date.now()}`;
  appendFileVar('GITHUB_OUTPUT', `${name}<<${delim}${os.EOL}${value}${os.EOL}${delim}${os.EOL}`);
}

// The `builder build` arguments for the inputs; `files` names the temp files it writes.
function buildArgs(files) {
  const args = ['build', '--progress=rawjson', '--metadata-file', files.metadata, '--iidfile', files.iid];
  const repeat = (flag, values) => values.forEach((v) => args.push(flag, v));
  const single = (flag, name) => input(name) && args.push(flag, input(name));
  repeat('-t', listInput('tags', true));
  single('-f', 'file');
  repeat('--build-arg', listInput('build-args'));
  repeat('--label', listInput('labels'));
  single('--target', 'target');
  const platforms = listInput('platforms', true);
  if (platforms.length) args.push('--platform', platforms.join(','));
  if (boolInput('push')) args.push('--push');
  repeat('-o', listInput('outputs'));
  if (boolInput('load')) args.push('-o', `type=docker,dest=${files.load}`);
  repeat('--cache-from', listInput('cache-from'));
  repeat('--cache-to', listInput('cache-to'));
  repeat('--secret', listInput('secrets'));
  repeat('--ssh', listInput('ssh'));
  single('--provenance', 'provenance');
  single('--sbom', 'sbom');
  if (boolInput('no-cache')) args.push('--no-cache');
  single('--builder', 'builder');
  repeat('--annotation', listInput('annotations'));
  if (boolInput('pull')) args.push('--pull');
  args.push(input('context') || '.');
  return args;
}

function download(url, dest, redirects = 5) {
  const get = (url.startsWith('https:') ? require('https') : require('http')).get;
  return new Promise((resolve, reject) => {
    get(url, { headers: { 'user-agent': 'builder-action' } }, (res) => {
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && res.headers.location && redirects > 0) {
        res.resume();
        resolve(download(new URL(res.headers.location, url).toString(), dest, redirects - 1));
      } else if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`downloading ${url}: HTTP ${res.statusCode}`));
      } else {
        const out = fs.createWriteStream(dest, { mode: 0o755 });
        res.pipe(out);
        out.on('finish', () => out.close(() => resolve(dest)));
        out.on('error', reject);
      }
    }).on('error', reject);
  });
}

// `builder` from PATH, or the release named by the `version` input (cached per version).
async function builderBinary() {
  const version = input('version').replace(/^v/, '');
  if (!version) return 'builder';
  const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch] || process.arch;
  const repo = process.env.GITHUB_ACTION_REPOSITORY || 'builder/builder';
  const base = process.env.BUILDER_RELEASE_URL || `https://github.com/${repo}/releases/download`;
  const dir = path.join(process.env.RUNNER_TOOL_CACHE || os.tmpdir(), 'builder', version);
  const dest = path.join(dir, 'builder');
  if (!fs.existsSync(dest)) {
    fs.mkdirSync(dir, { recursive: true });
    await download(`${base}/v${version}/builder-linux-${arch}`, `${dest}.part`);
    fs.renameSync(`${dest}.part`, dest);
  }
  return dest;
}

// The farm's TLS files (PEM text, or a path to one) as the directory BUILDER_CERT_PATH names:
// ca.pem, cert.pem, key.pem. Returns the environment for the build.
function farmEnv(dir) {
  const env = { ...process.env };
  const pems = [['builder-ca', 'ca.pem'], ['builder-cert', 'cert.pem'], ['builder-key', 'key.pem']]
    .filter(([name]) => input(name));
  if (!pems.length) return env;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, file] of pems) {
    const value = input(name);
    const text = value.includes('-----BEGIN') ? `${value}\n` : fs.readFileSync(value, 'utf8');
    fs.writeFileSync(path.join(dir, file), text, { mode: 0o600 });
  }
  env.BUILDER_CERT_PATH = dir;
  return env;
}

// Runs the build, echoing its progress as text and keeping the rawjson events.
function runBuild(bin, args, env) {
  process.stdout.write(`[command]${bin} ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'inherit', 'pipe'], env });
    const events = [];
    let pending = '';
    const line = (l) => {
      let e = null;
      try { e = JSON.parse(l); } catch (_) { /* a plain message */ }
      if (e && typeof e === 'object' && e.event) {
        events.push(e);
        if (e.name) process.stdout.write(`#${e.vertex} ${e.event.toUpperCase()} ${e.name}${e.error ? `: ${e.error}` : ''}\n`);
      } else if (l) {
        process.stdout.write(`${l}\n`);
      }
    };
    child.stderr.on('data', (chunk) => {
      const lines = (pending + chunk.toString()).split('\n');
      pending = lines.pop();
      lines.forEach(line);
    });
    child.on('error', reject);
    child.on('close', (code) => { line(pending); resolve({ code, events }); });
  });
}

// Markdown: each step with its status and duration, then the totals.
function summary(events, code) {
  const steps = new Map();
  for (const e of events) {
    if (!e.name) continue;
    const s = steps.get(e.vertex) || { name: e.name, status: '', start: null, end: null };
    if (e.event === 'started') s.start = e.time;
    if (e.event === 'completed') { s.end = e.time; s.status = e.error ? 'error' : 'done'; }
    if (e.event === 'cached') s.status = 'cached';
    steps.set(e.vertex, s);
  }
  const cell = (t) => String(t).replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const rows = [...steps.values()].map((s) => {
    const secs = s.start != null && s.end != null ? `${(s.end - s.start).toFixed(2)}s` : '';
    return `| ${cell(s.name)} | ${s.status || 'pending'} | ${secs} |`;
  });
  const cached = [...steps.values()].filter((s) => s.status === 'cached').length;
  return [
    `### builder build ${code === 0 ? 'succeeded' : 'failed'}`, '',
    `${steps.size} steps, ${cached} cache hits`, '',
    '| Step | Status | Duration |', '| --- | --- | --- |', ...rows, '',
  ].join('\n');
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'builder-action-'));
  const files = {
    metadata: path.join(tmp, 'metadata.json'),
    iid: path.join(tmp, 'iid'),
    load: path.join(tmp, 'image.tar'),
  };
  try {
    const args = buildArgs(files);
    const env = farmEnv(path.join(tmp, 'farm-tls'));
    const { code, events } = await runBuild(await builderBinary(), args, env);
    appendFileVar('GITHUB_STEP_SUMMARY', summary(events, code));
    if (code !== 0) throw new Error(`builder build exited with ${code}`);
    const metadata = fs.existsSync(files.metadata) ? fs.readFileSync(files.metadata, 'utf8') : '{}';
    const imageid = fs.existsSync(files.iid) ? fs.readFileSync(files.iid, 'utf8').trim() : '';
    setOutput('imageid', imageid);
    setOutput('digest', JSON.parse(metadata)['containerimage.digest'] || imageid);
    setOutput('metadata', metadata);
    if (boolInput('load')) {
      const r = spawnSync('docker', ['load', '-i', files.load], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error('docker load failed');
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stdout.write(`::error::${e.message}\n`);
  process.exitCode = 1;
});
