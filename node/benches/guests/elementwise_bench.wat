;; elementwise_bench: an elementwise kernel repeated on the device, for
;; benchmarks. Input: kernel (0 = vector_add, 1 = saxpy), n, iters (u32 LE).
;; Fills two buffers of n random values (never zeros), launches the kernel
;; `iters` times through `gpu.launch` and returns element 0 of its output
;; (reading it waits for every launch). Each launch moves 12·n bytes.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (type $kernel-arg (variant (case "buf" (borrow $buffer)) (case "f32" f32) (case "u32" u32)))
    (export "kernel-arg" (type $ka (eq $kernel-arg)))
    (export "[static]buffer.create"
      (func (param "len" u32) (result (result (own $buffer) (error $ge)))))
    (export "[method]buffer.write"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "data" (list f32))
            (result (result (error $ge)))))
    (export "[method]buffer.read"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "len" u32)
            (result (result (list f32) (error $ge)))))
    (export "launch"
      (func (param "kernel" string) (param "args" (list $ka)) (result (result (error $ge)))))))

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
  (core func $launch (canon lower (func $gpu "launch")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "launch" (func $launch (param i32 i32 i32 i32 i32)))
    (global $x (mut i32) (i32.const 0x2468ace1))
    (data (i32.const 256) "vector_add")
    (data (i32.const 272) "saxpy")
    (data (i32.const 288) "elementwise_bench: input must be kernel (0|1), n, iters (u32 LE)")
    ;; Fills count f32s at ptr with xorshift32 values in [-1, 1).
    (func $fill (param $ptr i32) (param $count i32)
      (local $i i32) (local $x i32)
      (local.set $x (global.get $x))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
          (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
          (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
          (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
          (f32.store (i32.add (local.get $ptr) (i32.shl (local.get $i) (i32.const 2)))
            (f32.sub
              (f32.mul (f32.convert_i32_u (i32.shr_u (local.get $x) (i32.const 8)))
                       (f32.const 0x1p-23))
              (f32.const 1)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (global.set $x (local.get $x)))
    ;; Stores kernel-arg tag and payload at the index-th slot of the list at 64.
    (func $arg (param $index i32) (param $tag i32) (param $payload i32)
      (i32.store8 (i32.add (i32.const 64) (i32.shl (local.get $index) (i32.const 3))) (local.get $tag))
      (i32.store (i32.add (i32.const 68) (i32.shl (local.get $index) (i32.const 3))) (local.get $payload)))
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $kernel i32) (local $n i32) (local $iters i32) (local $scratch i32)
      (local $x i32) (local $y i32) (local $out i32) (local $name i32) (local $name_len i32)
      (block $gpu_failed
        (block $bad_input
          (br_if $bad_input (i32.ne (local.get $len) (i32.const 12)))
          (local.set $kernel (i32.load (local.get $in)))
          (local.set $n (i32.load offset=4 (local.get $in)))
          (local.set $iters (i32.load offset=8 (local.get $in)))
          (br_if $bad_input (i32.gt_u (local.get $kernel) (i32.const 1)))
          (br_if $bad_input (i32.eqz (local.get $n)))
          (local.set $scratch (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
                                 (i32.shl (local.get $n) (i32.const 2))))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $x (i32.load (i32.const 4)))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $y (i32.load (i32.const 4)))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $out (i32.load (i32.const 4)))
          (call $fill (local.get $scratch) (local.get $n))
          (call $write (local.get $x) (i32.const 0) (local.get $scratch) (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (call $fill (local.get $scratch) (local.get $n))
          (call $write (local.get $y) (i32.const 0) (local.get $scratch) (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          ;; vector_add(x, y, out, n) or saxpy(0.5, x, y, n); the output is
          ;; read back from out or y.
          (if (i32.eqz (local.get $kernel))
            (then
              (call $arg (i32.const 0) (i32.const 0) (local.get $x))
              (call $arg (i32.const 1) (i32.const 0) (local.get $y))
              (call $arg (i32.const 2) (i32.const 0) (local.get $out))
              (local.set $name (i32.const 256))
              (local.set $name_len (i32.const 10)))
            (else
              (call $arg (i32.const 0) (i32.const 1) (i32.reinterpret_f32 (f32.const 0.5)))
              (call $arg (i32.const 1) (i32.const 0) (local.get $x))
              (call $arg (i32.const 2) (i32.const 0) (local.get $y))
              (local.set $out (local.get $y))
              (local.set $name (i32.const 272))
              (local.set $name_len (i32.const 5))))
          (call $arg (i32.const 3) (i32.const 2) (local.get $n))
          (block $done
            (loop $again
              (br_if $done (i32.eqz (local.get $iters)))
              (call $launch (local.get $name) (local.get $name_len) (i32.const 64) (i32.const 4) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (local.set $iters (i32.sub (local.get $iters) (i32.const 1)))
              (br $again)))
          (call $read (local.get $out) (i32.const 0) (i32.const 1) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.load (i32.const 4)))
          (i32.store (i32.const 24) (i32.const 4))
          (return (i32.const 16)))
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 288))
        (i32.store (i32.const 24) (i32.const 64))
        (return (i32.const 16)))
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
      (export "launch" (func $launch))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
