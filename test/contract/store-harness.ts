// What a port's contract suite gets from each adapter under test.
export interface StoreHarness<T> {
  store: T;
  /**
   * Another instance on the same storage: a second replica (PostgreSQL), a second
   * handle (SQLite), or the same instance where storage is the instance (memory).
   */
  replica: T;
  close(): Promise<void>;
}

export type CreateHarness<T> = () => Promise<StoreHarness<T>>;
