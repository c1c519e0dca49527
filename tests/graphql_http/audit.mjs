import { serverAudits } from 'graphql-http';
const url = process.argv[2];
let ok = 0, warn = 0, err = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  if (result.status === 'ok') ok++;
  else if (result.status === 'warn') { warn++; console.log('WARN', audit.name, '-', result.reason); }
  else { err++; console.log('ERROR', audit.name, '-', result.reason); }
}
console.log(`${ok} ok, ${warn} warnings, ${err} errors`);
process.exit(warn + err > 0 ? 1 : 0);
