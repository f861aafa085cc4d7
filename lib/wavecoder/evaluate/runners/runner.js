'use strict';
// Our runner (trusted): it takes the token, then runs test.js as a classic script in a fresh
// realm (`vm` context) whose `console` and the namespaces the tests compare through are ours
// and cannot be replaced; a failed `console.assert` is recorded in this closure, which the
// program cannot reach. The pass line is written only when the whole script ran, no assertion
// failed, and nothing was thrown.
const fs = require('fs');
const vm = require('vm');
const path = require('path');
const Module = require('module');
const writeSync = fs.writeSync;
const exit = process.exit.bind(process);
let line = '';
try {
  const token = fs.readFileSync(3, 'utf8').trim();
  fs.closeSync(3);
  if (!token) exit(3);
  line = 'PASS ' + token + '\n';
} catch (e) { exit(3); }
let failed = false;
function report(text) {
  try { writeSync(2, text + '\n'); } catch (e) { /* the sandbox sees the run fail anyway */ }
}
const file = path.resolve('test.js');
const source = fs.readFileSync(file, 'utf8');
const context = vm.createContext();
const theirs = vm.runInContext('globalThis', context);
const builtins = new Set(Object.getOwnPropertyNames(theirs));
// Node's own globals (process, Buffer, timers, URL, TextEncoder...) as a module sees them
for (const name of Object.getOwnPropertyNames(globalThis)) {
  if (!builtins.has(name) && name !== 'global') {
    Object.defineProperty(theirs, name, Object.getOwnPropertyDescriptor(globalThis, name));
  }
}
theirs.global = theirs;
const mod = new Module(file, null);
mod.filename = file;
mod.paths = Module._nodeModulePaths(path.dirname(file));
mod.loaded = true;
Object.assign(theirs, {
  require: Module.createRequire(file),
  module: mod,
  exports: mod.exports,
  __filename: file,
  __dirname: path.dirname(file),
});
// the console the tests use: the real one's printing methods, and an assert that fails the run
const ourConsole = Object.create(null);
const consoleNames = Object.getOwnPropertyNames(Object.getPrototypeOf(console))
  .concat(Object.getOwnPropertyNames(console));
for (const name of consoleNames) {
  if (typeof console[name] === 'function') ourConsole[name] = console[name].bind(console);
}
ourConsole.assert = function assert(cond, ...data) {
  if (cond) return;
  failed = true;
  let message = 'Assertion failed';
  try {
    if (data.length) message += ': ' + data.join(' ');
  } catch (e) { /* the program's toString */ }
  throw new Error(message);
};
Object.freeze(ourConsole);
// `var X = ...` of these cannot replace them, `let/const/class X` is a SyntaxError,
// `X.y = ...` does nothing (their own properties are frozen; prototypes stay writable:
// `Foo.prototype.toString = ...` must keep working, it does under the metric)
const fixed = { console: ourConsole };
for (const name of ['JSON', 'Math', 'Reflect', 'Object', 'Array', 'String', 'Number', 'Boolean',
  'Symbol', 'Function', 'globalThis', 'isNaN', 'isFinite', 'parseInt', 'parseFloat']) {
  fixed[name] = theirs[name];
}
for (const name of Object.keys(fixed)) {
  const value = fixed[name];
  if (name !== 'globalThis' && name !== 'Function') Object.freeze(value);
  Object.defineProperty(theirs, name,
    { value, writable: false, enumerable: false, configurable: false });
}
let completed = false;
try {
  vm.runInContext(source, context, { filename: file });
  completed = true;
} catch (e) {
  failed = true;
  let text = 'uncaught exception';
  try { text = String((e && e.stack) || e); } catch (e2) { /* a hostile getter */ }
  report(text);
}
if (completed && !failed) {
  writeSync(4, line);
} else {
  process.exitCode = 1;
}
line = '';
