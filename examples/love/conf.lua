-- One small window: the dialogue box with its captions.
function love.conf(t)
  t.identity = "fish-love-live"
  t.version = "11.0"
  t.window.title = "fish: live speech with captions"
  t.window.width = 800
  t.window.height = 240
  -- Not used; the joystick module also slows SDL's start-up.
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
