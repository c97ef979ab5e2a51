;; two_memories: a component with two linear memories (4 MiB each at
;; instantiation, as a toolchain's interpreter and its adapter have) that
;; then allocates `gpu` buffers of 1 MiB (256 Ki f32 elements) until one is
;; refused, and grows its second memory by 1 MiB pages until that fails.
;; One memory limit covers all of it: with a 16 MiB limit, 8 MiB of memory
;; leaves room for 8 buffers. The answer is the buffers it got (a byte)
;; and the code of the refusal (out-of-memory is 0); the growth after them
;; ends the job `memory_limit_exceeded`.
;;
;; Input: one byte; 0 stops after the buffers (the answer), 1 also grows.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (export "buffer" (type $buffer (sub resource)))
    (export "[static]buffer.create" (func (param "len" u32) (result (result (own $buffer) (error $ge)))))))
  (alias export $gpu "buffer" (type $buffer))

  (core module $alloc
    (memory (export "memory") 64)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr (global.get $heap))
      (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
      (local.get $ptr)))
  (core instance $a (instantiate $alloc))
  (core func $create (canon lower (func $gpu "[static]buffer.create") (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 64))
    (import "gpu" "create" (func $create (param i32 i32)))
    ;; The second memory: 64 pages of 64 KiB.
    (memory $second 64)
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $got i32)
      (block $refused
        (loop $more
          (call $create (i32.const 262144) (i32.const 256))
          (br_if $refused (i32.load8_u (i32.const 256)))
          (local.set $got (i32.add (local.get $got) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $got) (i32.const 100)))))
      ;; The answer: [buffers got, error code] at 512.
      (i32.store8 (i32.const 512) (local.get $got))
      (i32.store8 (i32.const 513) (i32.load8_u (i32.const 260)))
      (if (i32.and (i32.gt_u (local.get $len) (i32.const 0)) (i32.load8_u (local.get $in)))
        (then
          (loop $grow
            (br_if $grow (i32.ne (memory.grow $second (i32.const 16)) (i32.const -1))))))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 512))
      (i32.store (i32.const 24) (i32.const 2))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance (export "create" (func $create))))))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
