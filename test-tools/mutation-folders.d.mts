export declare const FOLDERS: Readonly<Record<string, { readonly mutate: string[]; readonly tests: string[] }>>;
export declare const selected: (env?: string) => string[];
export declare const mutateGlobs: (names?: string[]) => string[];
export declare const testFiles: (names?: string[]) => string[];
export declare const SLOW_TESTS: readonly { readonly pattern: string; readonly why: string }[];
