// Types of sluice-client (index.js); see README.md.
import Redis from 'ioredis';

export type Item = Record<string, unknown> | string | Buffer;

export interface SubmitOptions {
  name?: string;
  defaults?: Record<string, unknown>;
  retentionMs?: number;
  dedupeTtlMs?: number;
  webhook?: string;
  idempotencyKey?: string;
  idempotencyTtlMs?: number;
  labels?: Record<string, string>;
  batchId?: string;
}

export interface SubmitReport {
  batch: string;
  reused: boolean;
  submitted: number;
  skipped: Array<{index: number; heldBy: {batch: string; index: number}}>;
}

export interface BatchEvent {
  queue: string;
  batch: string;
  status: 'submitting' | 'queued' | 'running' | 'paused' | 'completed' | 'cancelled';
  total: number;
  done: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  pct: number;
  // where the unfinished items are; with done they add up to total
  queued: number;
  scheduled: number;
  waiting: number;
  running: number;
  retrying: number;
  paused: number;
  rate: number | null;   // items/s over the last 10-20 s
  eta_ms: number | null; // time left at that rate
  metrics?: Record<string, {all: number; final: number}>;
  reran?: number;
  ts: number;
}

export interface ProgressEvent {
  type: 'progress';
  queue: string;
  batch: string;
  items: Record<string, number>;
  ts: number;
}

export interface BatchStatus extends BatchEvent {
  name: string;
  whole: boolean;
  submitted: number;
  skipped: number;
  refused: number;
  created_at: number;
  queued_at: number;
  started_at: number;
  finished_at: number;
  ended: boolean;
  labels?: Record<string, string>; // status() and the first event: the batch's labels
}

export interface ResultLine {
  index: number;
  id: string;
  status: 'succeeded' | 'failed' | 'cancelled';
  attempts: number;
  started_at: number | null;
  finished_at: number;
  duration_ms: number | null;
  worker: string | null;
  result?: unknown;
  error?: string;
  errors?: string[];
  refused?: boolean;
}

export class Client {
  constructor(redis?: Redis | string, options?: {queue?: string; loadLibrary?: boolean; actor?: string});
  readonly redis: Redis;
  readonly queue: string;
  close(): Promise<void>;
  libraryVersion(): Promise<string>;
  submit(items: Iterable<Item> | AsyncIterable<Item>, options?: SubmitOptions & {report?: false}): Promise<string>;
  submit(items: Iterable<Item> | AsyncIterable<Item>, options: SubmitOptions & {report: true}): Promise<SubmitReport>;
  status(batch: string): Promise<BatchStatus>;
  results(batch: string): AsyncGenerator<ResultLine>;
  events(batch: string, options?: {timeoutMs?: number; progress?: boolean; idleMs?: number}):
    AsyncGenerator<BatchEvent | ProgressEvent>;
  cancel(batch: string, options?: {abort?: boolean}): Promise<string>;
  pause(batch: string): Promise<string>;
  resume(batch: string): Promise<string>;
  retry(batch: string): Promise<number>;
}

export function newBatchId(): string;
export function libraryVersion(): string;

export class SluiceError extends Error { code: string | null; batch?: string | null; }
export class ItemError extends SluiceError {
  index: number; id: string | null; field: string | null; reason: string; batch: string | null;
}
export class LibraryError extends SluiceError {}
export class LibraryMissingError extends LibraryError { needed: string; }
export class LibraryVersionError extends LibraryError { loaded: string; needed: string; }
export class LibraryPermissionError extends LibraryError { needed: string; }
export class BatchNotFoundError extends SluiceError { batch: string; queue: string; }
export class BatchStateError extends SluiceError { status: string; }
export class BatchCancelledError extends SluiceError {}
export class RedisFullError extends SluiceError {}
export class ProtocolError extends SluiceError {}
