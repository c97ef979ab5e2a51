;; log_flood: logs in a tight loop until its deadline interrupts it. Every
;; message holds a newline followed by a forged host log line. The host
;; keeps at most the job's log budget (and one marker saying it was cut),
;; with each newline escaped, so no forged line starts a line of its own.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (type $level (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $lvl (eq $level)))
    (export "log" (func (param "level" $lvl) (param "message" string)))))
  (core module $alloc
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))
  (core instance $a (instantiate $alloc))
  (core func $log (canon lower (func $job "log") (memory $a "memory")))
  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "job" "log" (func $log (param i32 i32 i32)))
    (data (i32.const 64) "flood\0a2026-12-06T00:00:00.000000Z  INFO spillway: forged host line")
    (func (export "run") (param i32 i32) (result i32)
      (loop $forever
        (call $log (i32.const 2) (i32.const 64) (i32.const 66))
        (br $forever))
      (i32.const 0)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "log" (func $log))))))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
