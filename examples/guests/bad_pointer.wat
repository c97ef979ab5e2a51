;; bad_pointer (hostile): hands the host pointers outside its memory. Input
;; byte 0 (or no input): calls `job.emit` with a chunk that starts near the
;; end of the 4 GiB address space. Input byte 1: returns a result whose
;; list points past its memory. Both must end the job with a trap, with
;; nothing read from outside the guest's memory.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "emit" (func (param "chunk" (list u8)) (result (result (error string)))))))

  (core module $alloc
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024)))
  (core instance $a (instantiate $alloc))
  (core func $emit (canon lower (func $job "emit")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "job" "emit" (func $emit (param i32 i32 i32)))
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (if (i32.and (i32.ne (local.get $len) (i32.const 0))
                   (i32.eq (i32.load8_u (local.get $in)) (i32.const 1)))
        (then
          ;; ok(list at 0xffff0000, 4096 bytes)
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 0xffff0000))
          (i32.store (i32.const 24) (i32.const 4096))
          (return (i32.const 16))))
      (call $emit (i32.const 0xffffff00) (i32.const 4096) (i32.const 0))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (i32.store (i32.const 24) (i32.const 0))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "emit" (func $emit))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
