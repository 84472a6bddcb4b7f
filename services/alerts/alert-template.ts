// `{{ name }}` and nothing else: summaries only need values filled in, and a template
// language with logic would let a rule file fail at firing time instead of at load time.
const placeholderPattern = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/** Names a template refers to, so configuration can reject a typo before anything fires. */
export function templatePlaceholders(template: string): string[] {
  return [...template.matchAll(placeholderPattern)].map((match) => match[1] ?? "");
}

/** Fills each `{{ name }}` from values; a name without a value renders empty. */
export function renderTemplate(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(placeholderPattern, (_whole, name: string) => values[name] ?? "");
}
