// The one place where the outside world's Either becomes an exception: scripts, notebooks and the CLI.

import type { Either } from 'fp-ts/lib/Either.js';

/** The Right value, or throw the Left's message (file, field or tensor, and what was expected). */
export const orThrow = <E extends { readonly message: string }, A>(e: Either<E, A>): A => {
  if (e._tag === 'Left') throw new Error(e.left.message);
  return e.right;
};
