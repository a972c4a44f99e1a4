// `minio server DIR [--address :PORT] [--console-address ...]` for the MinIO stand-in: s3rver on DIR, with
// MINIO_ROOT_USER / MINIO_ROOT_PASSWORD registered as the access key pair (s3rver knows only its dummy key otherwise).
'use strict';
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');

const args = process.argv.slice(2);
if (args[0] !== 'server' || !args[1]) {
  console.error('usage: minio server DIR [--address :9000]');
  process.exit(2);
}
const at = args.indexOf('--address');
const port = at > 0 ? Number(args[at + 1].split(':').pop()) : 9000;
const user = process.env.MINIO_ROOT_USER;
const password = process.env.MINIO_ROOT_PASSWORD;
if (user && password) new AWSAccount(1, 'minio-root').createKeyPair(user, password);

// Path-style only: with vhost buckets on, a request to http://minio:9000 would name a bucket "minio".
const server = new S3rver({ address: '0.0.0.0', port, directory: args[1], silent: true,
  vhostBuckets: false });
server.run().then(() => console.log(`S3 stand-in (s3rver) on :${port}, data in ${args[1]}`), (err) => {
  console.error(err);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().then(() => process.exit(0)));
}
