// Compiles every src/*.sol with solc-js (standard JSON, EVM version cancun, optimizer 200 runs)
// and writes out/<Contract>.bin (creation code, hex) and out/<Contract>.abi (JSON).
// solcjs's command line has no --evm-version flag; the standard-JSON input does.
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const srcDir = path.join(__dirname, "src");
const outDir = path.join(__dirname, "out");
fs.mkdirSync(outDir, { recursive: true });

const sources = {};
for (const file of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`src/${file}`] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

function findImports(importPath) {
  for (const base of [path.join(__dirname, "node_modules"), __dirname]) {
    const full = path.join(base, importPath);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `not found: ${importPath}` };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

for (const [file, contracts] of Object.entries(output.contracts)) {
  if (!file.startsWith("src/")) continue; // dependencies are compiled, not emitted
  const stem = path.basename(file, ".sol");
  for (const [name, artifact] of Object.entries(contracts)) {
    if (name !== stem) continue; // only the contract a file is named after
    fs.writeFileSync(path.join(outDir, `${name}.bin`), artifact.evm.bytecode.object + "\n");
    fs.writeFileSync(path.join(outDir, `${name}.abi`), JSON.stringify(artifact.abi, null, 1) + "\n");
    console.log(`built out/${name}.bin (${artifact.evm.bytecode.object.length / 2} bytes), solc ${solc.version()}`);
  }
}
