/** Storage refused a request we should not have sent: a bug of ours, logged, answered as 500. */
export class StorageRejectedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StorageRejectedError";
  }
}
