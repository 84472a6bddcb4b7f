import { InvalidArgumentError, Option } from "commander";

/** A flag with its AGENTMESH_* environment twin, shown in --help. */
export function envOption(flags: string, env: string, description: string, defaultValue?: string | boolean): Option {
  const option = new Option(flags, description).env(env);
  if (defaultValue !== undefined) option.default(defaultValue);
  return option;
}

export function parseInteger(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) throw new InvalidArgumentError(`${name} must be an integer ${min}-${max}`);
    return parsed;
  };
}

export function parseNumber(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) throw new InvalidArgumentError(`${name} must be a number ${min}-${max}`);
    return parsed;
  };
}
