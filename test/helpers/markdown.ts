// Reads the parts of docs/*.md that tests hold the code to (tables, shell blocks),
// so a document and the test that checks it cannot drift apart.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./processes.js";

export function readDoc(relativePath: string): string {
  return readFileSync(join(repoRoot, relativePath), "utf8");
}

/** The text of the section under the first heading whose text starts with `heading`, up to the next heading of the same or a higher level. */
export function section(markdown: string, heading: string): string {
  const lines = markdown.split("\n");
  const start = lines.findIndex((line) => /^#+ /.test(line) && line.replace(/^#+ /, "").startsWith(heading));
  if (start === -1) throw new Error(`no heading starting with "${heading}"`);
  const level = /^#+/.exec(lines[start] as string)?.[0].length ?? 1;
  let end = lines.length;
  for (let index = start + 1; index < lines.length; index += 1) {
    const found = /^(#+) /.exec(lines[index] as string);
    if (found && (found[1] as string).length <= level) {
      end = index;
      break;
    }
  }
  return lines.slice(start + 1, end).join("\n");
}

/** Splits a table row on pipes that are not escaped (`\|` stays in the cell, unescaped). */
function cells(row: string): string[] {
  const inner = row.trim().replace(/^\|/, "").replace(/\|$/, "");
  return inner.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

/** Every row of the first table in `markdown`, keyed by its header cells. */
export function firstTable(markdown: string): Array<Record<string, string>> {
  const lines = markdown.split("\n");
  const start = lines.findIndex((line, index) => line.trim().startsWith("|") && /^\s*\|[\s:|-]+\|\s*$/.test(lines[index + 1] ?? ""));
  if (start === -1) throw new Error("no table found");
  const header = cells(lines[start] as string);
  const rows: Array<Record<string, string>> = [];
  for (let index = start + 2; index < lines.length && (lines[index] as string).trim().startsWith("|"); index += 1) {
    const values = cells(lines[index] as string);
    if (values.length !== header.length) throw new Error(`table row ${index + 1} has ${values.length} cells, the header ${header.length}`);
    rows.push(Object.fromEntries(header.map((name, column) => [name, values[column] as string])));
  }
  return rows;
}

/** Inline code spans of a cell, in order (`a` and `b` → ["a", "b"]). */
export function codeSpans(text: string): string[] {
  return [...text.matchAll(/`([^`]+)`/g)].map((match) => match[1] as string);
}

/** Fenced code blocks (```lang … ```) of `markdown` with their language tag. */
export function codeBlocks(markdown: string): Array<{ lang: string; body: string }> {
  return [...markdown.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((match) => ({ lang: match[1] as string, body: match[2] as string }));
}
