;; echo: returns its input unchanged.
;;
;; The smallest complete Spillway guest: one core module that exports its
;; memory, a bump allocator (`cabi_realloc`, which the host uses to pass the
;; input in) and `run`, lifted to the component function
;; `run: func(input: list<u8>) -> result<list<u8>, string>`.
(component
  (core module $guest
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    ;; A bump allocator: a job's memory lives only as long as the job.
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq (memory.grow (i32.sub (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))
                                            (memory.size)))
                      (i32.const -1))
            (then unreachable))))
      (if (local.get $old) (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
      (local.get $ptr))
    ;; run(ptr, len) -> pointer to result<list<u8>, string>: tag at +0,
    ;; list pointer at +4, length at +8.
    (func (export "run") (param $ptr i32) (param $len i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $ptr))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
