const fnvOffset64 = 14695981039346656037n;
const fnvPrime64 = 1099511628211n;
const labelSeparatorByte = 0xff;

/** Label name → value; an alert's identity. */
export type AlertLabels = Readonly<Record<string, string>>;

/**
 * The fingerprint Prometheus and Alertmanager give a label set (prometheus/common
 * model.LabelSet.Fingerprint: FNV-1a 64 over the sorted names and values, each followed by
 * byte 0xff, printed as 16 hex digits). Using the same function means a receiver that already
 * deduplicates Alertmanager traffic by fingerprint treats ours the same way. BigInt is fine
 * here: it runs once when a condition starts, never per observation.
 */
export function labelsFingerprint(labels: AlertLabels): string {
  let hash = fnvOffset64;
  const add = (byte: number): void => {
    hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * fnvPrime64);
  };
  const encoder = new TextEncoder();
  for (const name of Object.keys(labels).sort(compareBytes)) {
    for (const byte of encoder.encode(name)) add(byte);
    add(labelSeparatorByte);
    for (const byte of encoder.encode(labels[name] ?? "")) add(byte);
    add(labelSeparatorByte);
  }
  return hash.toString(16).padStart(16, "0");
}

/** Go sorts strings by bytes; for label names (ASCII by rule) this equals code-unit order. */
function compareBytes(left: string, right: string): number {
  return left < right ? -1 : left > right ? 1 : 0;
}
