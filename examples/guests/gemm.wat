;; gemm: multiplies two matrices through the `gpu` interface.
;;
;; Input: m, n, k as little-endian u32, then A (m×k) and B (k×n) as
;; row-major little-endian f32. Output: C = A·B (m×n) in the same encoding.
;; The guest builds three device buffers, writes A and B, calls `gpu.gemm`,
;; reads C back and drops the buffers. Any gpu error is returned as the
;; guest's error string.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (export "[static]buffer.create"
      (func (param "len" u32) (result (result (own $buffer) (error $ge)))))
    (export "[method]buffer.write"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "data" (list f32))
            (result (result (error $ge)))))
    (export "[method]buffer.read"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "len" u32)
            (result (result (list f32) (error $ge)))))
    (export "gemm"
      (func (param "m" u32) (param "n" u32) (param "k" u32) (param "alpha" f32)
            (param "a" (borrow $buffer)) (param "b" (borrow $buffer))
            (param "beta" f32) (param "c" (borrow $buffer))
            (result (result (error $ge)))))))
  (alias export $gpu "buffer" (type $buffer))

  (core module $alloc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
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
      (local.get $ptr)))
  (core instance $a (instantiate $alloc))
  (core func $create (canon lower (func $gpu "[static]buffer.create")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $write (canon lower (func $gpu "[method]buffer.write")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $gemm (canon lower (func $gpu "gemm")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $drop (canon resource.drop $buffer))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "gemm" (func $gemm (param i32 i32 i32 f32 i32 i32 f32 i32 i32)))
    (import "gpu" "drop" (func $drop (param i32)))
    (data (i32.const 64) "gemm: input must be m, n, k (u32 LE) then A (m*k f32) and B (k*n f32)")
    ;; Scratch: imports return through [0, 16), run returns through [16, 28).
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $m i32) (local $n i32) (local $k i32)
      (local $a i32) (local $b i32) (local $c i32)
      (local $ptr i32) (local $count i32)
      (block $gpu_failed
        (block $bad_input
          (br_if $bad_input (i32.lt_u (local.get $len) (i32.const 12)))
          (local.set $m (i32.load (local.get $in)))
          (local.set $n (i32.load offset=4 (local.get $in)))
          (local.set $k (i32.load offset=8 (local.get $in)))
          ;; Sizes must match exactly (computed in i64 so they cannot wrap).
          (br_if $bad_input
            (i64.ne (i64.extend_i32_u (local.get $len))
                    (i64.add (i64.const 12)
                      (i64.mul (i64.const 4)
                        (i64.add (i64.mul (i64.extend_i32_u (local.get $m)) (i64.extend_i32_u (local.get $k)))
                                 (i64.mul (i64.extend_i32_u (local.get $k)) (i64.extend_i32_u (local.get $n))))))))

          (call $create (i32.mul (local.get $m) (local.get $k)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $a (i32.load (i32.const 4)))
          (call $create (i32.mul (local.get $k) (local.get $n)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $b (i32.load (i32.const 4)))
          (call $create (i32.mul (local.get $m) (local.get $n)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $c (i32.load (i32.const 4)))

          (call $write (local.get $a) (i32.const 0) (i32.add (local.get $in) (i32.const 12))
                        (i32.mul (local.get $m) (local.get $k)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (call $write (local.get $b) (i32.const 0)
                        (i32.add (i32.add (local.get $in) (i32.const 12))
                                 (i32.shl (i32.mul (local.get $m) (local.get $k)) (i32.const 2)))
                        (i32.mul (local.get $k) (local.get $n)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))

          (call $gemm (local.get $m) (local.get $n) (local.get $k) (f32.const 1)
                       (local.get $a) (local.get $b) (f32.const 0) (local.get $c) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))

          (call $read (local.get $c) (i32.const 0) (i32.mul (local.get $m) (local.get $n)) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $ptr (i32.load (i32.const 4)))
          (local.set $count (i32.load (i32.const 8)))
          (call $drop (local.get $a))
          (call $drop (local.get $b))
          (call $drop (local.get $c))

          ;; ok(list<u8>): the f32 elements are already little-endian bytes.
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (local.get $ptr))
          (i32.store (i32.const 24) (i32.shl (local.get $count) (i32.const 2)))
          (return (i32.const 16)))
        ;; bad input: err(the usage string)
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 64))
        (i32.store (i32.const 24) (i32.const 69))
        (return (i32.const 16)))
      ;; a gpu call failed: err(its gpu-error message), at +8 (ptr) and +12 (len).
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance
      (export "create" (func $create))
      (export "write" (func $write))
      (export "read" (func $read))
      (export "gemm" (func $gemm))
      (export "drop" (func $drop))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
