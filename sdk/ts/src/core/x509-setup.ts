// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect
// metadata polyfill loaded before the library itself; ESM evaluates imports in
// order, so this import must stay first. Import x509 only through this module.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";

// Node's WebCrypto is the provider for every key operation the library does
// (signing certificates, verifying CSRs, key identifiers).
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
export const subtle = webcrypto.subtle;
