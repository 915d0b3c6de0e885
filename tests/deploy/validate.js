#!/usr/bin/env node
// Validates Kubernetes objects offline against the OpenAPI schemas shipped in the
// npm packages `kubernetes-models` (core API), `@kubernetes-models/keda` (KEDA CRDs) and
// `@kubernetes-models/prometheus-operator` (PodMonitor, PrometheusRule).
//
//   kubectl kustomize deploy/kubernetes | node tests/deploy/validate.js [--json] [--name LABEL]
//
// Reads a multi-document YAML stream on stdin. Every document must have a known
// apiVersion/kind and pass the schema, else the script prints one line per problem on
// stderr and exits 1. With --json it prints the parsed objects as a JSON array on stdout
// (tests/deploy/test_manifests.py uses that instead of a YAML parser of its own).
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

// apiVersion group -> npm module prefix holding one class file per kind.
const PROVIDERS = [
  { match: (group) => group === 'keda.sh' || group === 'eventing.keda.sh', pkg: '@kubernetes-models/keda' },
  { match: (group) => group === 'monitoring.coreos.com', pkg: '@kubernetes-models/prometheus-operator' },
  { match: () => true, pkg: 'kubernetes-models' },
];

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Za-z0-9]+$/.test(kind)) {
    throw new Error('missing or malformed apiVersion/kind');
  }
  const slash = apiVersion.lastIndexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const provider = PROVIDERS.find((p) => p.match(group));
  const modulePath = `${provider.pkg}/${apiVersion}/${kind}`;
  let mod;
  try {
    mod = require(modulePath);
  } catch (e) {
    throw new Error(`no schema for ${apiVersion} ${kind} (looked for ${modulePath})`);
  }
  const cls = mod[kind] || mod.default;
  if (typeof cls !== 'function') throw new Error(`${modulePath} exports no class ${kind}`);
  return cls;
}

// The generated validators test each property the schema declares (`data.x === undefined`)
// and enumerate the keys of maps (labels, data, ...). Running them on a proxy that records
// those reads tells which keys the schema knows: a key never read, in an object whose keys
// were never enumerated, is a field Kubernetes does not know. The API server rejects such
// objects (kubectl apply validates strictly), so report them like schema errors.
function tracked(value, path, records) {
  if (value === null || typeof value !== 'object') return value;
  const rec = { path, isArray: Array.isArray(value), keys: Object.keys(value), read: new Set(), enumerated: false };
  records.push(rec);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== 'string' || !Object.prototype.hasOwnProperty.call(target, key)) return v;
      rec.read.add(key);
      if (v === null || typeof v !== 'object') return v;
      if (!children.has(key)) children.set(key, tracked(v, `${path}/${key}`, records));
      return children.get(key);
    },
    has(target, key) {
      if (typeof key === 'string') rec.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      rec.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function unknownFields(Model, obj) {
  const records = [];
  const proxy = tracked(JSON.parse(JSON.stringify(obj)), '', records);
  try {
    Model.prototype.validate.call(proxy);
  } catch (e) {
    return []; // schema errors are reported by the plain validation
  }
  const unknown = [];
  for (const rec of records) {
    if (rec.isArray || rec.enumerated || rec.read.size === 0) continue; // list, map, or opaque
    for (const key of rec.keys) if (!rec.read.has(key)) unknown.push(`${rec.path}/${key}`);
  }
  return unknown;
}

function describe(obj, index) {
  const md = (obj && obj.metadata) || {};
  const ns = md.namespace ? `${md.namespace}/` : '';
  return `#${index} ${obj && obj.kind}/${ns}${md.name}`;
}

function main() {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const labelAt = args.indexOf('--name');
  const label = labelAt >= 0 ? args[labelAt + 1] : 'stdin';
  const text = fs.readFileSync(0, 'utf8');

  const problems = [];
  const objects = [];
  const docs = YAML.parseAllDocuments(text);
  docs.forEach((doc, i) => {
    if (doc.errors.length) {
      doc.errors.forEach((e) => problems.push(`document #${i}: YAML: ${e.message}`));
      return;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) return; // empty document
    objects.push(obj);
    const where = describe(obj, i);
    if (!obj.metadata || typeof obj.metadata.name !== 'string' || !obj.metadata.name) {
      problems.push(`${where}: metadata.name is missing`);
    }
    let Model;
    try {
      Model = modelFor(obj.apiVersion, obj.kind);
    } catch (e) {
      problems.push(`${where}: ${e.message}`);
      return;
    }
    try {
      new Model(obj).validate();
    } catch (e) {
      const details = Array.isArray(e.errors)
        ? e.errors.map((x) => `${x.instancePath || '/'} ${x.message}${x.params && x.params.additionalProperty ? ` (${x.params.additionalProperty})` : ''}`).join('; ')
        : e.message;
      problems.push(`${where}: schema: ${details}`);
      return;
    }
    for (const field of unknownFields(Model, obj)) problems.push(`${where}: unknown field ${field}`);
  });

  if (objects.length === 0) problems.push('no objects in input');
  if (problems.length) {
    problems.forEach((p) => process.stderr.write(`${label}: ${p}\n`));
    process.stderr.write(`${label}: ${problems.length} problem(s) in ${objects.length} object(s)\n`);
    process.exit(1);
  }
  if (json) process.stdout.write(JSON.stringify(objects));
  else process.stdout.write(`${label}: ${objects.length} object(s) valid\n`);
}

main();
