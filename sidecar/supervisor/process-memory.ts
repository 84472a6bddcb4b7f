import { readFile } from "node:fs/promises";

/** Reads a process's resident set size; undefined when it is gone or the platform has no /proc. */
export type RssReader = (pid: number) => Promise<number | undefined>;

const bytesPerKibibyte = 1024;

/**
 * VmRSS from /proc/<pid>/status (Linux). One small file read per poll; cheap enough at a 500 ms
 * interval for dozens of agents, and it needs neither root nor cgroups.
 */
export const readProcRssBytes: RssReader = async (pid) => {
  let status: string;
  try {
    status = await readFile(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  return parseVmRssBytes(status);
};

export function parseVmRssBytes(procStatus: string): number | undefined {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(procStatus);
  return match?.[1] === undefined ? undefined : Number(match[1]) * bytesPerKibibyte;
}
