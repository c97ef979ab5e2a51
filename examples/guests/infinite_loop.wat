;; infinite_loop (hostile): never returns and never yields. The epoch
;; deadline must stop it; the host must keep serving other jobs meanwhile.
(component
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (loop $forever (br $forever))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
