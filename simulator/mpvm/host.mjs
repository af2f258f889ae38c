// One MicroPython 1.27 VM (MicroPython's own WebAssembly port) serving calls over stdin/stdout.
//
//   node host.mjs [--heap 256k] [--mount VMDIR=HOSTDIR ...]
//
// Each --mount copies HOSTDIR's *.py files (recursively) into the VM's file system at VMDIR, so
// `import firmware_py.codec` inside the VM runs the same source files CPython runs.
// Protocol: one JSON object per line on stdin, one answer per line on stdout, in order.
//   {"op": "call", "mod": "m", "fn": "f", "arg": "text"}  -> {"ok": true, "result": <str or null>, "out": "..."}
//   {"op": "exec", "code": "..."}                          -> {"ok": true, "out": "..."}
//   failure                                                -> {"ok": false, "error": "Type: detail", "out": "..."}
// Text crosses the boundary as str only (bytes travel hex- or JSON-encoded), so nothing depends on
// the proxy layer's conversions. What the VM prints is returned in "out".
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

function parseArgs(argv) {
  const opts = { heap: 256 * 1024, mounts: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--heap") {
      const text = argv[++i];
      const n = parseInt(text, 10);
      opts.heap = text.endsWith("k") ? n * 1024 : text.endsWith("m") ? n * 1048576 : n;
    } else if (argv[i] === "--mount") {
      const [vm, host] = argv[++i].split("=");
      opts.mounts.push([vm, host]);
    } else {
      throw new Error(`host.mjs: unknown argument ${argv[i]}; expected --heap N or --mount VMDIR=HOSTDIR`);
    }
  }
  return opts;
}

function copyTree(FS, vmDir, hostDir) {
  FS.mkdirTree(vmDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const from = path.join(hostDir, entry.name);
    const to = `${vmDir}/${entry.name}`;
    if (entry.isDirectory()) {
      if (entry.name !== "__pycache__") copyTree(FS, to, from);
    } else if (entry.name.endsWith(".py")) {
      FS.writeFile(to, fs.readFileSync(from));
    }
  }
}

const opts = parseArgs(process.argv.slice(2));
let out = [];
const mp = await loadMicroPython({
  heapsize: opts.heap,
  linebuffer: true,
  stdout: (line) => out.push(line),
  stderr: (line) => out.push(line),
});
for (const [vm, host] of opts.mounts) copyTree(mp.FS, vm, host);
mp.runPython("import sys\nsys.path.insert(0, '/')");

function answer(obj) {
  obj.out = out.join("\n");
  out = [];
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const functions = new Map();
function lookup(mod, fn) {
  const key = `${mod}.${fn}`;
  if (!functions.has(key)) functions.set(key, mp.pyimport(mod)[fn]);
  return functions.get(key);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    answer({ ok: false, error: `host: expected one JSON object per line, got ${line.slice(0, 80)}` });
    return;
  }
  try {
    if (req.op === "call") {
      const result = lookup(req.mod, req.fn)(req.arg);
      answer({ ok: true, result: result === undefined ? null : result });
    } else if (req.op === "exec") {
      mp.runPython(req.code);
      answer({ ok: true });
    } else {
      answer({ ok: false, error: `host: expected op call or exec, got ${req.op}` });
    }
  } catch (e) {
    answer({ ok: false, error: e.name === "PythonError" ? `${e.type}: ${e.message}` : String(e) });
  }
});
rl.on("close", () => process.exit(0));
process.stdout.write(JSON.stringify({ ok: true, ready: true, implementation: "micropython" }) + "\n");
