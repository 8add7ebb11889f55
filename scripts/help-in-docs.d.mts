export const DOCUMENTS: string[];
export function helpOf(command: string): string;
export function withCurrentHelp(file: string): { text: string; updated: string; stale: string[] };
