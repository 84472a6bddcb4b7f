import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * Creates the directory if needed and proves it writable with a real write: as
 * root, permission bits say nothing, and a read-only mount only shows on write.
 */
export async function ensureWritableDirectory(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  const probe = join(path, `.write-test-${process.pid}`);
  await writeFile(probe, "");
  await rm(probe, { force: true });
}
