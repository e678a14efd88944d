// tool-db 2.6.6 hashes with Node's crypto.createHash (sha256, sha1), which
// a browser lacks; bundlers substitute a polyfill for "crypto". This one
// covers exactly what tool-db calls, on @noble/hashes (audited, no deps):
// createHash(alg).update(string).digest("hex").
import { sha256 } from "@noble/hashes/sha2.js";
import { sha1 } from "@noble/hashes/legacy.js";

const algorithms = { sha256, sha1 };
const utf8 = new TextEncoder();

export function createHash(alg) {
  const fn = algorithms[alg];
  if (!fn) throw new Error("crypto-shim: unsupported hash " + alg);
  const h = fn.create();
  const hash = {
    update(data) {
      h.update(typeof data === "string" ? utf8.encode(data) : data);
      return hash;
    },
    digest(encoding) {
      const out = h.digest();
      if (encoding !== "hex") return out;
      return Array.from(out, (b) => b.toString(16).padStart(2, "0")).join("");
    },
  };
  return hash;
}

export default { createHash };
